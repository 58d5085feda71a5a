"""Jobs of ``rules/report.smk``: the figures and pages of ``snakemake --report``
(:mod:`diffattr.report`). Each reads workflow files and writes one output, atomically through
:mod:`diffattr.store`."""

from __future__ import annotations

import csv
import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from diffattr import report, store
from diffattr.errors import FeatureMismatchError
from diffattr.files import ScoreFile
from diffattr.report import (
    GridRow,
    config_html,
    evenly_spaced_rows,
    html_page,
    load_lds_records,
    plot_lambda_curves,
    plot_lds_bars,
    png_data_uri,
    proponents_and_opponents,
    read_benchmarks,
    runtime_table,
)
from diffattr.settings import AttributionGridSettings
from diffattr.tables import html_table


def plot_lds(
    lds_paths: Sequence[str],
    bars_path: str,
    curves_path: str,
    *,
    labels: Sequence[Mapping[str, Any]],
) -> None:
    """The LDS bars and λ curves of the records ``lds_paths`` (``labels``: each record's
    method, K and split, parallel to the paths)."""
    records = load_lds_records(lds_paths, labels)
    plot_lds_bars(records, bars_path)
    plot_lambda_curves(records, curves_path)


def plot_attribution_grid(
    scores_path: str,
    lds_path: str,
    dataset_path: str,
    samples_path: str | None,
    out_path: str,
    *,
    settings: AttributionGridSettings,
) -> dict[str, Any]:
    """Proponent / opponent grid of evenly spaced queries at the held-out λ of ``lds_path``.

    Proponents are the training rows that most support a query: the largest τ, or for scores in
    loss units (``lds_sign`` = +1: empirical influence, datamodels) the most negative τ.
    ``settings.label`` (e.g. "dtrak, K = 10") heads the figure.
    """
    split, label = settings.split, settings.label
    from diffattr import data
    from diffattr.queries import load_queries

    record = store.read_json(lds_path)
    choice = record["choices"]["heldout"]
    train = data.load_split(dataset_path, "train")
    query_images, query_ids = load_queries(split, dataset_path, samples_path)
    rows = evenly_spaced_rows(len(query_ids), settings.queries)
    with ScoreFile(scores_path) as file:
        scores = file.read_rows(file.lambda_index(choice["lambda"]), rows)
        train_ids, test_ids, sign = file.train_ids, file.test_ids, file.lds_sign
    if not np.array_equal(train_ids, train.ids):
        raise FeatureMismatchError(
            f"{scores_path}: score columns do not follow the train split of {dataset_path}"
        )
    if not np.array_equal(test_ids, query_ids):
        raise FeatureMismatchError(f"{scores_path}: score rows do not match the {split!r} queries")
    # rank by support: −τ for scores in loss units (lds_sign +1), τ otherwise
    counts = settings.proponents, settings.opponents
    chosen = [proponents_and_opponents(-sign * row, *counts) for row in scores]
    grid = [
        GridRow(query_images[r], f"{split} id {int(query_ids[r])}", top, bottom, row_scores)
        for r, (top, bottom), row_scores in zip(rows, chosen, scores, strict=True)
    ]
    title = f"{label}  λ = {choice['lambda']:g} (held-out choice)".strip()
    report.plot_attribution_grid(grid, train.images, out_path, title=title)
    return {"rows": rows.tolist(), "proponents": [t.tolist() for t, _ in chosen]}


def tabulate_runtimes(benchmark_dir: str, out_path: str) -> list[dict[str, Any]]:
    """``runtimes.html``: per-rule runtime summary of every benchmark file of the experiment."""
    table = runtime_table(read_benchmarks(benchmark_dir)) if Path(benchmark_dir).is_dir() else []
    columns = ["rule", "jobs", "total_s", "mean_s", "max_s", "max_rss_mb"]
    body = (
        f"<p>From the <code>benchmark:</code> files under <code>{html.escape(benchmark_dir)}</code>"
        " (wall-clock seconds and peak resident memory in MB, as Snakemake measured them).</p>"
        + (html_table(table, columns) if table else "<p>No benchmark files found.</p>")
    )
    store.write_text(out_path, html_page("Runtimes per rule", body))
    return table


def dump_config(out_path: str, *, config: Mapping[str, Any]) -> None:
    store.write_text(out_path, config_html(config))


def write_overview(
    summary_csv: str,
    figures: Mapping[str, str],
    out_path: str,
    *,
    experiment: str,
    findings_path: str | None = None,
) -> None:
    """An HTML fragment for the report's front page: what the run found in plain words
    (``findings_path``, from :mod:`diffattr.demo_checks`), the held-out LDS table and key
    figures.

    ``figures`` maps an element id to a PNG path. Images are embedded as data URIs, so the
    fragment is self-contained; each ``<img>`` carries its id (the report test looks for them).
    """
    with open(summary_csv, newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("lambda_choice") == "heldout"]
    columns = ["method", "split", "K", "lambda", "lds", "lds_boot_mean", "lds_boot_std"]
    parts = ["<div class='diffattr-overview'>"]
    if findings_path is not None:
        parts.append(Path(findings_path).read_text())
    parts += [
        f"<h3>{html.escape(experiment)}: LDS (%) at the held-out λ</h3>",
        html_table(rows, columns),
    ]
    for element_id, path in figures.items():
        name = html.escape(element_id)
        parts.append(
            f"<p><img id='{name}' alt='{name}' style='max-width:100%' "
            f"src='{png_data_uri(path)}'></p>"
        )
    parts.append("</div>")
    store.write_text(out_path, "\n".join(parts) + "\n")
