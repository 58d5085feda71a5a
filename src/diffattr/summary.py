"""Result tables: ``summary.csv`` (one row per method, split, K and λ choice) and ``summary.md``.

LDS values are reported in percent. ``lds`` is the full-sample point estimate at the chosen λ;
``lds_boot_mean`` ± ``lds_boot_std`` is the bootstrap over subsets (what the paper's tables
print). ``heldout`` rows choose λ on a disjoint subset pool (the honest number); ``oracle`` rows
choose it on the benchmark itself, as the paper did. ``readout`` is ``signed`` (τ) or
``squared`` (τ², :mod:`diffattr.methods.readout`): squared rows measure how well |τ| ranks the
rows and are not comparable with signed ones.

The counterfactual section (:func:`counterfactual_markdown`) and ``counterfactual.csv``
(:func:`counterfactual_table`) come from the collected ``counterfactual/summary.json``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from diffattr import counterfactual
from diffattr.tables import markdown_table

COLUMNS = [
    "method",
    "split",
    "K",
    "readout",
    "lambda_choice",
    "lambda",
    "lds",
    "lds_boot_mean",
    "lds_boot_std",
    "lds_ci_low",
    "lds_ci_high",
    "num_subsets",
    "num_queries",
]


def summary_rows(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Flatten LDS records (from ``evaluate_lds``) into table rows, LDS ×100."""
    rows = []
    for record in records:
        for choice in ("heldout", "oracle"):
            chosen = record["choices"][choice]
            rows.append(
                {
                    "method": record["method"],
                    "split": record["split"],
                    "K": record["K"],
                    "readout": record.get("readout", "signed"),
                    "lambda_choice": choice,
                    "lambda": chosen["lambda"],
                    "lds": round(100 * chosen["lds"], 2),
                    "lds_boot_mean": round(100 * chosen["boot_mean"], 2),
                    "lds_boot_std": round(100 * chosen["boot_std"], 2),
                    "lds_ci_low": round(100 * chosen["ci_low"], 2),
                    "lds_ci_high": round(100 * chosen["ci_high"], 2),
                    "num_subsets": record["num_subsets"],
                    "num_queries": record["num_queries"],
                }
            )
        rows.extend(crossfit_rows(record))
        rows.extend(own_choice_rows(record))
    rows.sort(key=lambda r: (r["split"], r["method"], int(r["K"]), r["lambda_choice"]))
    return rows


def _unbootstrapped_row(record: dict[str, Any], choice: str, lam: Any, value: float) -> dict:
    """A summary row without a bootstrap (those cells stay empty)."""
    return {
        "method": record["method"],
        "split": record["split"],
        "K": record["K"],
        "lambda_choice": choice,
        "lambda": lam,
        "lds": round(100 * value, 2),
        "lds_boot_mean": "",
        "lds_boot_std": "",
        "lds_ci_low": "",
        "lds_ci_high": "",
        "num_subsets": record["num_subsets"],
        "num_queries": record["num_queries"],
    }


def crossfit_rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``crossfit`` row of an LDS record: λ chosen on one half of the benchmark subsets and
    evaluated on the other, swapped, averaged (``lds``; λ per fold joined by ``/``; no
    bootstrap, so those cells stay empty)."""
    crossfit = record.get("crossfit")
    if not crossfit:
        return []
    lambdas = "/".join(f"{lam:g}" for lam in crossfit["lambdas"])
    return [_unbootstrapped_row(record, "crossfit", lambdas, crossfit["lds"])]


def own_choice_rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``heldout_own`` row of a gen record whose reported λ is val's (``lds.gen_lambda:
    val``): the λ of the split's own held-out curve and the benchmark LDS there (no bootstrap,
    so those cells stay empty). None for a record that took its own choice."""
    own = record.get("heldout_own")
    if record.get("heldout_rule") != "val" or not own:
        return []
    row = _unbootstrapped_row(record, "heldout_own", own["lambda"], own["lds"])
    return [{**row, "readout": record.get("readout", "signed")}]


def lds_markdown(rows: Sequence[dict[str, Any]], ceiling: dict[str, Any] | None) -> str:
    """The LDS section: held-out λ (reported) and oracle λ side by side, plus the noise ceiling."""
    lines = [
        "## Linear datamodeling score (LDS, %)",
        "",
        "`lds` is the point estimate over all benchmark subsets at the chosen λ; "
        "`lds_boot_mean ± lds_boot_std` is the bootstrap over subsets (what the paper tabulates). "
        "`heldout`: λ chosen on a disjoint subset pool (the reported number; on gen, by "
        "default, the val split's held-out λ: `lds.gen_lambda`, with the gen curve's own "
        "held-out choice beside it as `heldout_own`); "
        "`crossfit`: λ chosen on one half of the benchmark subsets and evaluated on the other, "
        "swapped and averaged (no extra models; each half is a smaller, noisier benchmark); "
        "`oracle`: λ chosen on the benchmark itself, as in the paper. "
        "`readout`: `signed` τ, or `squared` τ² (ranks |τ| only; a squared row's LDS is not "
        "comparable with a signed row's, docs/methods.md).",
        "",
        markdown_table(
            rows,
            [
                "method",
                "split",
                "K",
                "readout",
                "lambda_choice",
                "lambda",
                "lds",
                "lds_boot_mean",
                "lds_boot_std",
            ],
        ),
    ]
    if ceiling:
        lines += ["", "### Seed-to-seed noise ceiling", ""]
        lines.append(
            "`seed-to-seed`: Spearman correlation between the measured outputs of two training "
            "seeds of the same subsets, averaged over queries (how well one seed predicts "
            "another). `attainable`: the LDS that this seed noise leaves within reach against "
            "the mean over all seeds, which is what the LDS above is computed on "
            "(Spearman–Brown, per query; a guide, not a bound)."
        )
        lines.append("")
        for split, value in ceiling.items():
            if value is None:
                lines.append(f"- {split}: n/a (one training seed)")
                continue
            text = f"seed-to-seed {100 * value['mean']:.2f}"
            if "attainable" in value:
                text += f"; attainable ≈ {100 * value['attainable']:.1f} ({value['seeds']} seeds)"
            lines.append(f"- {split}: {text}")
    lines += ceiling_decomposition_lines(ceiling)
    return "\n".join(lines)


# --------------------------------------------------------------------------- paired comparisons

PAIRED_COLUMNS = [
    "comparison",
    "split",
    "K",
    "lambda_choice",
    "lds_diff",
    "diff_boot_mean",
    "diff_boot_std",
    "diff_ci_low",
    "diff_ci_high",
    "num_subsets",
    "num_queries",
]


def _pair_partners(
    records: Sequence[dict[str, Any]], method: str, split: str, K: int
) -> list[dict[str, Any]]:
    """``method``'s records that pair with a record at (split, K): the one at K, or its K = 0
    record if it has no timesteps; and for K = 0 (a first member without timesteps) every K."""
    return [
        record
        for record in records
        if record["method"] == method
        and record["split"] == split
        and (K == 0 or int(record["K"]) in (K, 0))
    ]


def paired_rows(
    records: Sequence[dict[str, Any]],
    measured: dict[str, Any],
    pairs: Sequence[Sequence[str]],
    n_resamples: int = 1000,
    seed: int = 42,
    choices: Sequence[str] = ("heldout", "oracle"),
) -> list[dict[str, Any]]:
    """Paired bootstrap of LDS(a) − LDS(b), ×100, for each configured pair [a, b] at each
    (split, K) where both are scored; a member without timesteps (its K = 0 record) pairs with
    every K of the other, whichever side of the pair it is on.

    ``measured`` maps each split to its [S, n] benchmark outputs; the predictions come from the
    records (:func:`diffattr.jobs.lds.evaluate_lds` stores them at each λ choice). Pairs with a method
    that is not in ``records`` are left out.
    """
    rows = []
    for a, b in pairs:
        for record in records:
            if record["method"] != a or record["split"] not in measured:
                continue
            for other in _pair_partners(records, b, record["split"], int(record["K"])):
                rows.extend(
                    _paired_choices(
                        record, other, measured[record["split"]], n_resamples, seed, choices
                    )
                )
    rows.sort(key=lambda r: (r["split"], r["comparison"], int(r["K"]), r["lambda_choice"]))
    return rows


def _paired_choices(
    record: dict[str, Any],
    other: dict[str, Any],
    measured: Any,
    n_resamples: int,
    seed: int,
    choices: Sequence[str],
) -> list[dict[str, Any]]:
    """The paired rows of ``record`` − ``other`` at each λ choice that both hold predictions
    for; K is the one of the member with timesteps."""
    from diffattr.lds import paired_bootstrap

    rows = []
    for choice in choices:
        pa = record["choices"][choice].get("predictions")
        pb = other["choices"][choice].get("predictions")
        if pa is None or pb is None:
            continue
        boot = paired_bootstrap(pa, pb, measured, n_resamples, seed)
        rows.append(
            {
                "comparison": f"{record['method']} - {other['method']}",
                "split": record["split"],
                "K": max(int(record["K"]), int(other["K"])),
                "lambda_choice": choice,
                "lds_diff": round(100 * boot["point"], 2),
                "diff_boot_mean": round(100 * boot["mean"], 2),
                "diff_boot_std": round(100 * boot["std"], 2),
                "diff_ci_low": round(100 * boot["ci_low"], 2),
                "diff_ci_high": round(100 * boot["ci_high"], 2),
                "num_subsets": record["num_subsets"],
                "num_queries": record["num_queries"],
            }
        )
    return rows


def paired_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The paired-comparison section of summary.md."""
    return "\n".join(
        [
            "## Paired differences (LDS points)",
            "",
            "`lds_diff` = LDS(a) − LDS(b) on the same subsets and queries; the bootstrap "
            "resamples subsets and queries together for both methods (`diff_ci_*`: 95% "
            "percentile interval). A difference whose interval excludes 0 is not an accident of "
            "which subsets and queries were drawn.",
            "",
            markdown_table(rows, PAIRED_COLUMNS) if rows else "(no configured pair is scored)",
        ]
    )


def ceiling_decomposition_lines(ceiling: dict[str, Any] | None) -> list[str]:
    """Lines of summary.md taking the noise ceiling apart (shared model-level vs per-query)."""
    parts = {
        split: value.get("decomposition")
        for split, value in (ceiling or {}).items()
        if value and value.get("decomposition")
    }
    if not parts:
        return []
    lines = [
        "",
        "### What the measured outputs are made of",
        "",
        "`shared`: the part of each query's outputs (standardised across subsets) that is one "
        "model-level effect common to every query — a model trained on subset s being better or "
        "worse overall; it is the share of the across-subset variance it explains. `shared "
        "decides`: mean Spearman of a query's outputs with that shared part alone. The "
        "seed-to-seed columns split the ceiling above into the shared part (across subsets) and "
        "the per-query rest. With few subsets the shared part is estimated from few points and "
        "can decide most of every per-query Spearman (docs/noise.md).",
        "",
    ]
    for split, part in parts.items():
        text = (
            f"- {split}: shared {100 * part['shared_fraction']:.1f}% of the variance; "
            f"shared decides {100 * part['shared_by_query']:.1f}"
        )
        if "shared_seed_to_seed" in part:
            text += (
                f"; seed-to-seed shared {100 * part['shared_seed_to_seed']:.1f}, per-query "
                f"{100 * part['residual_seed_to_seed']:.1f}"
            )
        lines.append(text)
    return lines


# --------------------------------------------------------------------------- noise-seed spread


def seed_spread_rows(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Methods that differ only in ``noise_seed`` (same kind, params, K and split), with the
    mean, std (ddof 1) and range of their held-out and oracle LDS over the seeds, ×100."""
    import json

    import numpy as np

    groups: dict[tuple, list[dict[str, Any]]] = {}
    for record in records:
        params = dict(record.get("params") or {})
        if "noise" not in params:
            continue  # no gradient features
        params.pop("noise_seed", None)
        key = (
            record["split"],
            int(record["K"]),
            record.get("kind"),
            json.dumps(params, sort_keys=True),
        )
        groups.setdefault(key, []).append(record)
    rows = []
    for (split, K, _, _), members in groups.items():
        if len(members) < 2 or not any("noise_seed" in (m.get("params") or {}) for m in members):
            continue
        row: dict[str, Any] = {
            "methods": ", ".join(sorted(m["method"] for m in members)),
            "split": split,
            "K": K,
            "seeds": len(members),
        }
        for choice in ("heldout", "oracle"):
            values = 100 * np.array([m["choices"][choice]["lds"] for m in members])
            row[f"{choice}_mean"] = round(float(values.mean()), 2)
            row[f"{choice}_std"] = round(float(values.std(ddof=1)), 2)
            row[f"{choice}_range"] = f"{values.min():.1f}..{values.max():.1f}"
        rows.append(row)
    rows.sort(key=lambda r: (r["split"], r["methods"], r["K"]))
    return rows


def seed_spread_markdown(records: Sequence[dict[str, Any]]) -> list[str]:
    """The noise-seed section of summary.md (empty without repeated methods)."""
    rows = seed_spread_rows(records)
    if not rows:
        return []
    columns = [
        "methods",
        "split",
        "K",
        "seeds",
        "heldout_mean",
        "heldout_std",
        "heldout_range",
        "oracle_mean",
        "oracle_std",
        "oracle_range",
    ]
    return [
        "",
        "## Feature-noise seed spread (LDS, %)",
        "",
        "Methods that differ only in `noise_seed`: how far the feature-noise draw alone moves "
        "one run's LDS. A difference between two methods smaller than this spread is not "
        "established by one run.",
        "",
        markdown_table(rows, columns),
    ]


# --------------------------------------------------------------------------- counterfactual


def counterfactual_table(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rows of ``counterfactual.csv`` (columns :data:`diffattr.counterfactual.TABLE_COLUMNS`):
    method, metric, median, mean (rounded to 4 decimals), n_targets."""
    return [
        {
            **row,
            "median": round(row["median"], 4),
            "mean": round(row["mean"], 4),
        }
        for row in summary["statistics"]
    ]


def counterfactual_markdown(summary: Mapping[str, Any]) -> str:
    """The counterfactual section of ``summary.md``, from the collected summary."""
    removed = f"top {summary['top_k']} of {summary['n_train']} training rows"
    ranking = "; ".join(
        f"{m} K = {summary['method_K'][m]}, λ = {v:g}" for m, v in summary["lambdas"].items()
    )
    lines = [
        "## Counterfactual evaluation (protocol §6)",
        "",
        f"For {len(summary['targets'])} generated images, each method's {removed} were removed, "
        "a model was retrained with the main model's settings and seed, and the image was "
        "regenerated from the same noise. A larger ℓ2 distance or a lower SSIM / CLIP "
        f"similarity means the removed examples mattered more. Gen scores at the held-out λ "
        f"({ranking or 'no scored methods'}); ℓ2 in {summary['space']} space.",
        "",
        markdown_table(counterfactual_table(summary), counterfactual.TABLE_COLUMNS),
        "",
        "Paired comparison: fraction of targets where the first method's removal changed the "
        "image more than the second's.",
        "",
        markdown_table(summary["paired"], counterfactual.PAIRED_COLUMNS),
        "",
        "Mean Jaccard overlap of the removal sets: "
        + ", ".join(
            f"{r['method']}/{r['other']} {r['mean_jaccard']:.2f}" for r in summary["overlap"]
        ),
    ]
    if summary.get("clip"):
        lines += ["", f"CLIP similarity: {summary['clip']}."]
    lines += ["", "Figure: `counterfactual/figure.png`."]
    return "\n".join(lines)
