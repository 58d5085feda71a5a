"""What a run found, in plain words: ``checks.md`` (printed after the results table) and the
first screen of the report.

It reads what the run already wrote — the LDS table (``summary.csv``), the sample-quality record
(:mod:`diffattr.sample_quality`), the class agreement of the proponents
(:mod:`diffattr.attribution_sanity`) and the counterfactual summary — and says, for a reader who
has not seen the protocol: were the samples recognisable, do proponents look like their query,
which method predicts retraining best, and does removing a method's top images change the
regenerated image more than removing random ones (with a 95 % Wilson interval on the paired
fraction, so a reader sees when there are too few targets to tell).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from typing import Any

# Methods that score from model gradients (the subject of the study), as opposed to pixel or
# CLIP similarity baselines.
GRADIENT_KINDS = (
    "trak",
    "relative_if",
    "renormalized_if",
    "grad_dot",
    "grad_cos",
    "tracin",
    "gas",
    "journey_trak",
    "ensemble_trak",
)


def wilson_interval(fraction: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a binomial proportion ``fraction`` out of ``n``."""
    if n < 1:
        return (0.0, 1.0)
    centre = (fraction + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(fraction * (1 - fraction) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def _heldout_rows(summary_csv: str) -> list[dict[str, str]]:
    with open(summary_csv, newline="") as handle:
        return [r for r in csv.DictReader(handle) if r.get("lambda_choice") == "heldout"]


def findings(
    summary_csv: str,
    quality: Mapping[str, Any] | None,
    sanity: Sequence[Mapping[str, Any]],
    counterfactual: Mapping[str, Any] | None,
    method_kinds: Mapping[str, str],
    run: Mapping[str, Any],
) -> list[tuple[str, str]]:
    """(heading, sentence) pairs: what was run and what it found."""
    lines: list[tuple[str, str]] = []
    parts = (
        [f"{run.get('n_train', '?')} training images ({run.get('dataset', '?')})"] if run else []
    )
    if run.get("training"):
        parts.append(f"a main diffusion model ({run['training']})")
    if run.get("lds_models"):
        parts.append(
            f"{run['lds_models']} models retrained on random halves of the training set (the "
            f"ground truth) and {run.get('heldout_models', 0)} more to choose λ"
        )
    parts.append(f"methods {', '.join(method_kinds)} scored {run.get('queries', '')}".strip())
    lines.append(("What ran", "; ".join(parts) + "."))
    if quality is not None:
        gen, val = quality["gen"], quality["val"]
        lines.append(
            (
                "Samples",
                f"{100 * gen['recognised_fraction']:.0f} % of the {gen['n']} generated samples "
                f"are recognised as one digit by a classifier fitted on the training images "
                f"(real val images: {100 * val['recognised_fraction']:.0f} %). Their median "
                f"distance to the nearest training image is {gen['median_nearest_distance']:.3f} "
                f"(real val images: {val['median_nearest_distance']:.3f}; a copy would be 0).",
            )
        )
    rows = _heldout_rows(summary_csv)
    for split in ("val", "gen"):
        part = [r for r in rows if r["split"] == split]
        if not part:
            continue
        best = max(part, key=lambda r: float(r["lds"]))
        gradient = [r for r in part if method_kinds.get(r["method"]) in GRADIENT_KINDS]
        text = (
            f"on {split} queries the method whose scores best predict the retrained models "
            f"is {best['method']} (LDS {float(best['lds']):.1f} %)"
        )
        if gradient and best not in gradient:
            top = max(gradient, key=lambda r: float(r["lds"]))
            text += (
                f"; the best gradient method, {top['method']}, reaches {float(top['lds']):.1f} %"
            )
        lines.append(("LDS", text[0].upper() + text[1:] + "."))
    for split in ("val", "gen"):
        part = [r for r in sanity if r["split"] == split]
        if not part:
            continue
        what = "label" if split == "val" else "classifier label"
        items = ", ".join(
            f"{r['method']} {100 * r['agreement']:.0f} % ({r['ratio']:.1f}×)" for r in part
        )
        chance = 100 * sum(r["chance"] for r in part) / len(part)
        lines.append(
            (
                "Proponents",
                f"Share of each {split} query's top-{part[0]['top']} proponents with the query's "
                f"{what}: {items}; chance {chance:.0f} %.",
            )
        )
    if counterfactual:
        pairs = [
            p
            for p in counterfactual.get("paired", [])
            if p["other"] == "random" and p["metric"] == "l2"
        ]
        for pair in pairs:
            low, high = wilson_interval(pair["fraction_more_change"], pair["n_targets"])
            verdict = (
                "more than random removal"
                if low > 0.5
                else "less than random removal"
                if high < 0.5
                else "not distinguishable from random removal at this number of targets"
            )
            lines.append(
                (
                    "Counterfactual",
                    f"Removing {pair['method']}'s top {counterfactual.get('top_k', '?')} training "
                    f"images and retraining changed the regenerated image (ℓ2) more than removing "
                    f"random ones for {100 * pair['fraction_more_change']:.0f} % of "
                    f"{pair['n_targets']} targets (95 % interval {100 * low:.0f}–{100 * high:.0f} "
                    f"%): {verdict}.",
                )
            )
    return lines
