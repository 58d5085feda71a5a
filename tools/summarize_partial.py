"""summary.md and paired.csv of the LDS records a results folder holds so far.

    python tools/summarize_partial.py RESULTS --pairs das:dtrak ekfac:dtrak [--out DIR]

For a run that asked Snakemake for some methods' `lds/<method>/K<K>/<split>.json` only (the rule
`summarize` needs every configured method): the same tables as `summary.md` and `paired.csv`
(`diffattr.jobs.summary.summarize`, paired bootstrap of each pair a − b on the same subsets and
queries), written to DIR (default RESULTS/partial/), from every record present.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    from diffattr.jobs.summary import SummaryFiles, summarize
    from diffattr.settings import SummarySettings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--pairs", nargs="+", required=True, metavar="A:B")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    pairs = []
    for text in args.pairs:
        a, sep, b = text.partition(":")
        if not (sep and a and b):
            raise SystemExit(f"--pairs: {text!r} is not a pair A:B of method names")
        pairs.append((a, b))
    records = sorted(str(p) for p in args.results.glob("lds/*/K*/*.json"))
    if not records:
        raise SystemExit(f"{args.results}: no LDS records under lds/<method>/K<K>/")
    out = args.out or args.results / "partial"
    out.mkdir(parents=True, exist_ok=True)
    ceiling = args.results / "lds" / "noise_ceiling.json"
    summarize(
        records,
        str(ceiling) if ceiling.exists() else None,
        str(args.results / "groundtruth" / "lds.h5"),
        out=SummaryFiles(
            csv=str(out / "summary.csv"), md=str(out / "summary.md"), paired=str(out / "paired.csv")
        ),
        settings=SummarySettings(experiment=args.results.name, pairs=tuple(pairs)),
    )
    print(out / "summary.md")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
