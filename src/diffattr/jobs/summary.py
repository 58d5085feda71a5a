"""Job of ``rules/summary.smk``: ``summary.csv`` and ``summary.md`` (:mod:`diffattr.summary`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from diffattr import files, store
from diffattr.counterfactual import TABLE_COLUMNS as COUNTERFACTUAL_COLUMNS
from diffattr.errors import ConfigError
from diffattr.settings import SummarySettings
from diffattr.summary import (
    COLUMNS,
    PAIRED_COLUMNS,
    counterfactual_markdown,
    counterfactual_table,
    lds_markdown,
    paired_markdown,
    paired_rows,
    seed_spread_markdown,
    summary_rows,
)
from diffattr.tables import csv_text


@dataclass(frozen=True, kw_only=True)
class SummaryFiles:
    """What :func:`summarize` writes: ``csv`` and ``md`` always; ``paired`` (paired.csv) when
    the method pairs are compared, ``counterfactual`` (counterfactual.csv) with the collected
    counterfactual summary."""

    csv: str
    md: str
    paired: str | None = None
    counterfactual: str | None = None


def summarize(
    lds_paths: Sequence[str],
    ceiling_path: str | None = None,
    groundtruth_path: str | None = None,
    counterfactual_path: str | None = None,
    *,
    out: SummaryFiles,
    settings: SummarySettings,
) -> list[dict[str, Any]]:
    """Write summary.csv and summary.md; with ``out.paired`` (and the benchmark
    ``groundtruth_path``) the paired bootstrap of each pair of ``settings.pairs``
    (:func:`paired_rows`) there and in summary.md; with ``counterfactual_path`` (the collected
    counterfactual summary) ``out.counterfactual`` and a counterfactual section."""
    records = [store.read_json(path) for path in lds_paths]
    rows = summary_rows(records)
    ceiling = store.read_json(ceiling_path) if ceiling_path else None
    store.write_text(out.csv, csv_text(rows, COLUMNS))
    extra_sections: list[str] = []
    if out.paired:
        measured = _benchmark_outputs(groundtruth_path, {r["split"] for r in records})
        paired = paired_rows(
            records, measured, settings.pairs, settings.paired_resamples, settings.paired_seed
        )
        store.write_text(out.paired, csv_text(paired, PAIRED_COLUMNS))
        extra_sections = ["", paired_markdown(paired)]
    if counterfactual_path:
        if out.counterfactual is None:
            raise ConfigError(
                f"summarize: counterfactual summary {counterfactual_path} given, but no "
                "SummaryFiles.counterfactual to write counterfactual.csv to"
            )
        summary = store.read_json(counterfactual_path)
        table = csv_text(counterfactual_table(summary), COUNTERFACTUAL_COLUMNS)
        store.write_text(out.counterfactual, table)
        extra_sections = [*extra_sections, "", counterfactual_markdown(summary)]
    sections = [
        f"# diffattr results: {settings.experiment}",
        "",
        lds_markdown(rows, ceiling),
        *seed_spread_markdown(records),
        *extra_sections,
    ]
    store.write_text(out.md, "\n".join(sections) + "\n")
    return rows


def _benchmark_outputs(groundtruth_path: str | None, splits: set[str]) -> dict[str, Any]:
    """[S, n] benchmark outputs of each split, for the paired comparisons."""
    if not groundtruth_path:
        return {}
    held = set(files.groundtruth_splits(groundtruth_path))
    return {s: files.read_groundtruth(groundtruth_path, s).measured for s in splits if s in held}
