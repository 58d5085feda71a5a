"""Paired LDS difference of the same methods in two results folders of one ground truth.

    python tools/paired_runs.py RESULTS_A RESULTS_B [--methods trak dtrak] [--resamples 1000]

For runs that share their models and LDS ground truth but differ in a feature-stage setting
(another projection, proj_dim, noise scheme: the overlays in experiments/overlays/), this prints,
per (method, K, split, λ choice), LDS in A, LDS in B and the paired bootstrap of LDS(A) − LDS(B)
(the same subsets and queries drawn for both, diffattr.lds.paired_bootstrap), in points.
The two folders must hold the same benchmark ground truth (checked).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def _records(results: Path) -> dict[tuple[str, int, str], dict]:
    found = {}
    for path in sorted(results.glob("lds/*/K*/*.json")):
        record = json.loads(path.read_text())
        found[(record["method"], int(record["K"]), record["split"])] = record
    return found


def main(argv: list[str]) -> int:
    from diffattr.files import read_groundtruth
    from diffattr.lds import paired_bootstrap

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--methods", nargs="*", default=None)
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args(argv)
    records_a, records_b = _records(args.a), _records(args.b)
    print("| method | K | split | λ choice | LDS A | LDS B | A − B (boot std; 95% CI) |")
    print("|---|---|---|---|---|---|---|")
    truth = {}
    for key in sorted(records_a.keys() & records_b.keys(), key=lambda k: (k[2], k[0], k[1])):
        method, K, split = key
        if args.methods and method not in args.methods:
            continue
        if split not in truth:
            ga = read_groundtruth(args.a / "groundtruth" / "lds.h5", split)
            gb = read_groundtruth(args.b / "groundtruth" / "lds.h5", split)
            if not (
                np.array_equal(ga.masks, gb.masks) and np.array_equal(ga.measured, gb.measured)
            ):
                raise SystemExit(f"{args.a} and {args.b} hold different {split} ground truths")
            truth[split] = ga.measured
        for choice in ("heldout", "oracle"):
            ca, cb = records_a[key]["choices"][choice], records_b[key]["choices"][choice]
            boot = paired_bootstrap(
                ca["predictions"], cb["predictions"], truth[split], args.resamples
            )
            print(
                f"| {method} | {K} | {split} | {choice} | {100 * ca['lds']:.1f} (λ {ca['lambda']:g})"
                f" | {100 * cb['lds']:.1f} (λ {cb['lambda']:g}) | {100 * boot['point']:+.1f} "
                f"({100 * boot['std']:.1f}; {100 * boot['ci_low']:+.1f}..{100 * boot['ci_high']:+.1f}) |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
