"""Job of ``rules/summary.smk``: ``summary.csv`` and ``summary.md`` (:mod:`diffattr.summary`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from diffattr import store
from diffattr.summary import (
    PAIRED_COLUMNS,
    lds_markdown,
    paired_markdown,
    paired_rows,
    seed_spread_markdown,
    summary_rows,
    to_csv,
)


def summarize(
    lds_paths: Sequence[str],
    ceiling_path: str | None,
    csv_path: str,
    md_path: str,
    experiment: str,
    extra_sections: Sequence[str] = (),
    counterfactual_path: str | None = None,
    counterfactual_csv_path: str | None = None,
    groundtruth_path: str | None = None,
    paired_csv_path: str | None = None,
    pairs: Sequence[Sequence[str]] = (),
    paired_resamples: int = 1000,
    paired_seed: int = 42,
) -> list[dict[str, Any]]:
    """Write summary.csv and summary.md; with ``counterfactual_path`` (the collected
    counterfactual summary) also ``counterfactual_csv_path`` and a counterfactual section;
    with ``paired_csv_path`` (and the benchmark ``groundtruth_path``) the paired bootstrap of
    each configured pair (:func:`paired_rows`) there and in summary.md."""
    records = [store.read_json(path) for path in lds_paths]
    rows = summary_rows(records)
    ceiling = store.read_json(ceiling_path) if ceiling_path else None
    store.write_text(csv_path, to_csv(rows))
    if paired_csv_path:
        measured = _benchmark_outputs(groundtruth_path, {r["split"] for r in records})
        paired = paired_rows(records, measured, pairs, paired_resamples, paired_seed)
        store.write_text(paired_csv_path, to_csv(paired, PAIRED_COLUMNS))
        extra_sections = ["", paired_markdown(paired), *extra_sections]
    if counterfactual_path:
        from diffattr.counterfactual import write_counterfactual_table

        section = write_counterfactual_table(counterfactual_path, counterfactual_csv_path)
        extra_sections = [*extra_sections, "", section]
    sections = [
        f"# diffattr results: {experiment}",
        "",
        lds_markdown(rows, ceiling),
        *seed_spread_markdown(records),
        *extra_sections,
    ]
    store.write_text(md_path, "\n".join(sections) + "\n")
    return rows


def _benchmark_outputs(groundtruth_path: str | None, splits: set[str]) -> dict[str, Any]:
    """[S, n] benchmark outputs of each split, for the paired comparisons."""
    if not groundtruth_path:
        return {}
    with store.open_h5(groundtruth_path) as handle:
        return {s: handle[f"{s}/measured"][()] for s in splits if f"{s}/measured" in handle}
