"""Result tables: ``summary.csv`` (one row per method, split, K and λ choice) and ``summary.md``.

LDS values are reported in percent. ``lds`` is the full-sample point estimate at the chosen λ;
``lds_boot_mean`` ± ``lds_boot_std`` is the bootstrap over subsets (what the paper's tables
print). ``heldout`` rows choose λ on a disjoint subset pool (the honest number); ``oracle`` rows
choose it on the benchmark itself, as the paper did. ``readout`` is ``signed`` (τ) or
``squared`` (τ², :mod:`diffattr.methods.readout`): squared rows measure how well |τ| ranks the
rows and are not comparable with signed ones.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

from diffattr import store

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
    """Flatten LDS records (from ``lds_job``) into table rows, LDS ×100."""
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
    rows.sort(key=lambda r: (r["split"], r["method"], int(r["K"]), r["lambda_choice"]))
    return rows


def crossfit_rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``crossfit`` row of an LDS record: λ chosen on one half of the benchmark subsets and
    evaluated on the other, swapped, averaged (``lds``; λ per fold joined by ``/``; no
    bootstrap, so those cells stay empty)."""
    crossfit = record.get("crossfit")
    if not crossfit:
        return []
    return [
        {
            "method": record["method"],
            "split": record["split"],
            "K": record["K"],
            "lambda_choice": "crossfit",
            "lambda": "/".join(f"{lam:g}" for lam in crossfit["lambdas"]),
            "lds": round(100 * crossfit["lds"], 2),
            "lds_boot_mean": "",
            "lds_boot_std": "",
            "lds_ci_low": "",
            "lds_ci_high": "",
            "num_subsets": record["num_subsets"],
            "num_queries": record["num_queries"],
        }
    ]


def to_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str] = COLUMNS) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def lds_markdown(rows: Sequence[dict[str, Any]], ceiling: dict[str, Any] | None) -> str:
    """The LDS section: held-out λ (reported) and oracle λ side by side, plus the noise ceiling."""
    lines = [
        "## Linear datamodeling score (LDS, %)",
        "",
        "`lds` is the point estimate over all benchmark subsets at the chosen λ; "
        "`lds_boot_mean ± lds_boot_std` is the bootstrap over subsets (what the paper tabulates). "
        "`heldout`: λ chosen on a disjoint subset pool (the reported number); "
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
    return "\n".join(lines)


def summary_job(
    lds_paths: Sequence[str],
    ceiling_path: str | None,
    csv_path: str,
    md_path: str,
    experiment: str,
    extra_sections: Sequence[str] = (),
    counterfactual_path: str | None = None,
    counterfactual_csv_path: str | None = None,
) -> list[dict[str, Any]]:
    """Write summary.csv and summary.md; with ``counterfactual_path`` (the collected
    counterfactual summary) also ``counterfactual_csv_path`` and a counterfactual section."""
    records = [store.read_json(path) for path in lds_paths]
    rows = summary_rows(records)
    ceiling = store.read_json(ceiling_path) if ceiling_path else None
    store.write_text(csv_path, to_csv(rows))
    if counterfactual_path:
        from diffattr.counterfactual import write_counterfactual_table

        section = write_counterfactual_table(counterfactual_path, counterfactual_csv_path)
        extra_sections = [*extra_sections, "", section]
    sections = [
        f"# diffattr results: {experiment}",
        "",
        lds_markdown(rows, ceiling),
        *extra_sections,
    ]
    store.write_text(md_path, "\n".join(sections) + "\n")
    return rows
