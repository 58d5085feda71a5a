"""Figures and tables for ``snakemake --report``: what people want to look at after a run.

* :func:`plot_lds_bars`        LDS at the held-out λ per method, split and K, bootstrap error bars;
* :func:`plot_lambda_curves`   LDS against λ on both subset pools, held-out and oracle λ marked;
* :func:`plot_attribution_grid` proponents / opponents of a few queries (the paper's teaser):
  the top positive and the most negative training images with their scores;
* :func:`runtime_table`        per-rule runtimes from the ``benchmark:`` files (rendered by
  :func:`diffattr.tables.html_table`);
* :func:`config_html`          the configuration that produced the results.

The jobs that read workflow files and write these outputs are in :mod:`diffattr.jobs.report`;
figures are written atomically through :mod:`diffattr.store`. Figures use matplotlib's
``Figure`` directly (Agg canvas), never pyplot, so nothing global changes. Scores follow the workflow's convention: τ[j, i] > 0 means training
row i supports query j (a proponent); the most negative scores are opponents.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from matplotlib.figure import Figure

from diffattr import store
from diffattr.errors import ConfigError, CorruptFileError
from diffattr.images import to_display
from diffattr.job_server import peak_memory_mb

CHOICES = ("heldout", "oracle")
#: Columns of a Snakemake ``benchmark:`` TSV that the runtime table summarises.
BENCHMARK_SECONDS = "s"
BENCHMARK_MEMORY = "max_rss"


# --------------------------------------------------------------------------- LDS figures


def load_lds_records(
    paths: Sequence[str | os.PathLike], labels: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """LDS records (written by :func:`diffattr.jobs.lds.evaluate_lds`) with ``method``, ``K`` and
    ``split`` from ``labels``.

    The labels come from the workflow (one per path, same order), so the figures never depend on
    what a record happens to store about itself.
    """
    if len(paths) != len(labels):
        raise ConfigError(f"{len(paths)} LDS files but {len(labels)} labels; give one per file")
    records = []
    for path, label in zip(paths, labels, strict=True):
        record = dict(store.read_json(path))
        missing = [
            key for key in ("lambdas", "lds_curve", "heldout_curve", "choices") if key not in record
        ]
        if missing:
            raise CorruptFileError(f"{path}: LDS record lacks {missing}; rerun evaluate_lds")
        record.update(method=str(label["method"]), K=int(label["K"]), split=str(label["split"]))
        records.append(record)
    if not records:
        raise ConfigError("no LDS records to plot")
    return records


def _method_colors(methods: Sequence[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    palette = colormaps["tab10"]
    return {method: palette(index % 10) for index, method in enumerate(methods)}


def _ordered(values: Sequence[Any]) -> list[Any]:
    return list(dict.fromkeys(values))


def plot_lds_bars(
    records: Sequence[Mapping[str, Any]], out_path: str | os.PathLike, choice: str = "heldout"
) -> None:
    """Bars of the LDS (×100) at the ``choice`` λ, one panel per split, grouped by K.

    Bar height is the full-sample point estimate; the error bar is ± the bootstrap std over
    subsets. The oracle-λ point estimate is drawn as an open marker above each bar.
    """
    if choice not in CHOICES:
        raise ConfigError(f"choice = {choice!r}; valid: {list(CHOICES)}")
    splits = _ordered(r["split"] for r in records)
    methods = _ordered(r["method"] for r in records)
    ks = sorted(_ordered(int(r["K"]) for r in records))
    colors = _method_colors(methods)
    by_key = {(r["split"], r["method"], int(r["K"])): r for r in records}
    width = 0.8 / len(methods)

    figure = Figure(
        figsize=(max(4.0, 2.2 * len(ks) * len(splits) + 1.5), 3.6), layout="constrained"
    )
    axes = figure.subplots(1, len(splits), sharey=True, squeeze=False)[0]
    for ax, split in zip(axes, splits, strict=True):
        for m, method in enumerate(methods):
            xs, heights, errors, oracles = [], [], [], []
            for position, K in enumerate(ks):
                record = by_key.get((split, method, K))
                if record is None:
                    continue
                chosen = record["choices"][choice]
                xs.append(position + (m - (len(methods) - 1) / 2) * width)
                heights.append(100 * chosen["lds"])
                errors.append(100 * chosen["boot_std"])
                oracles.append(100 * record["choices"]["oracle"]["lds"])
            bars = ax.bar(
                xs,
                heights,
                width * 0.9,
                yerr=errors,
                capsize=3,
                color=colors[method],
                label=method,
            )
            ax.bar_label(bars, fmt="%.1f", fontsize=7, label_type="center", color="white")
            if choice != "oracle":
                ax.scatter(
                    xs,
                    oracles,
                    marker="o",
                    facecolors="none",
                    edgecolors="black",
                    s=18,
                    zorder=3,
                    label="oracle λ" if m == 0 else None,
                )
        ax.set_xticks(range(len(ks)), [f"K = {K}" if K else "no K" for K in ks])
        ax.set_title(f"{split} queries")
        ax.axhline(0, color="grey", linewidth=0.6)
    where = "held-out" if choice == "heldout" else choice
    axes[0].set_ylabel(f"LDS (%) at the {where} λ, ± bootstrap std")
    axes[-1].legend(fontsize=8, loc="best")
    _save_figure(figure, out_path)


def plot_lambda_curves(records: Sequence[Mapping[str, Any]], out_path: str | os.PathLike) -> None:
    """LDS (×100) against λ, one panel per split and one colour per (method, K).

    Solid: the benchmark pool (what is reported); dashed: the held-out pool used to choose λ.
    A star marks the held-out choice on the benchmark curve (on gen, under
    ``lds.gen_lambda: val``, the val curve's choice, as the panel's title says), an open circle
    the oracle λ.
    Methods without a λ grid (one stored value) are left out.
    """
    records = [r for r in records if len(r["lambdas"]) > 1 and min(r["lambdas"]) > 0]
    if not records:
        raise ConfigError("no method with a λ grid to plot LDS-vs-λ curves for")
    splits = _ordered(r["split"] for r in records)
    series = _ordered((r["method"], int(r["K"])) for r in records)
    palette = _method_colors([f"{m} K={K}" for m, K in series])
    figure = Figure(figsize=(5.0 * len(splits), 3.8), layout="constrained")
    axes = figure.subplots(1, len(splits), sharey=True, squeeze=False)[0]
    for ax, split in zip(axes, splits, strict=True):
        for record in (r for r in records if r["split"] == split):
            name = f"{record['method']} K={int(record['K'])}"
            color = palette[name]
            lambdas = np.asarray(record["lambdas"], dtype=float)
            bench = 100 * np.asarray(record["lds_curve"], dtype=float)
            held = 100 * np.asarray(record["heldout_curve"], dtype=float)
            ax.plot(lambdas, bench, "-", color=color, label=name)
            ax.plot(lambdas, held, "--", color=color, alpha=0.6)
            chosen = record["choices"]["heldout"]["lambda_index"]
            oracle = record["choices"]["oracle"]["lambda_index"]
            ax.plot(
                lambdas[chosen],
                bench[chosen],
                "*",
                color=color,
                markersize=13,
                markeredgecolor="black",
            )
            ax.plot(
                lambdas[oracle],
                bench[oracle],
                "o",
                markerfacecolor="none",
                markeredgecolor="black",
                markersize=9,
            )
        ax.set_xscale("log")
        ax.set_xlabel("λ")
        by_val = any(
            r.get("heldout_rule") == "val" for r in records if r["split"] == split
        )  # lds.gen_lambda: val — the star is val's held-out λ
        ax.set_title(f"{split} queries" + (" (held-out λ chosen on val)" if by_val else ""))
        ax.grid(True, which="major", alpha=0.3)
    axes[0].set_ylabel("LDS (%)")
    from matplotlib.lines import Line2D

    keys = [
        Line2D([], [], color="black", linestyle="-", label="benchmark pool"),
        Line2D([], [], color="black", linestyle="--", alpha=0.6, label="held-out pool"),
        Line2D([], [], color="black", marker="*", linestyle="", markersize=11, label="held-out λ"),
        Line2D(
            [],
            [],
            color="black",
            marker="o",
            markerfacecolor="none",
            linestyle="",
            label="oracle λ",
        ),
    ]
    handles, _ = axes[-1].get_legend_handles_labels()
    axes[-1].legend(handles=handles + keys, fontsize=7, loc="best")
    _save_figure(figure, out_path)


# --------------------------------------------------------------------------- attribution grids


def evenly_spaced_rows(n_rows: int, count: int) -> np.ndarray:
    """``count`` row positions spread evenly over ``n_rows`` (all rows when there are fewer)."""
    if n_rows < 1:
        raise ConfigError("cannot pick example queries from an empty split")
    if count < 1:
        raise ConfigError(f"number of example queries = {count}; expected at least 1")
    return np.unique(np.linspace(0, n_rows - 1, min(count, n_rows)).round().astype(np.int64))


def proponents_and_opponents(
    scores: np.ndarray, positives: int, negatives: int
) -> tuple[np.ndarray, np.ndarray]:
    """Column indices of the ``positives`` largest and the ``negatives`` smallest scores of a row.

    Ties break by column order (stable sort), so the result is deterministic.
    """
    row = np.asarray(scores, dtype=np.float64).reshape(-1)
    if positives < 0 or negatives < 0:
        raise ConfigError(f"positives = {positives}, negatives = {negatives}; both must be >= 0")
    if positives + negatives > row.size:
        raise ConfigError(
            f"{positives} proponents + {negatives} opponents are more than the {row.size} "
            "training rows"
        )
    order = np.argsort(-row, kind="stable")
    top = order[:positives]
    bottom = np.argsort(row, kind="stable")[:negatives]
    return top, bottom


@dataclass(frozen=True)
class GridRow:
    """One query of a proponent / opponent grid: its image [C, H, W] and title, the columns of
    its ``proponents`` and ``opponents`` in the training images, and its score row."""

    image: np.ndarray
    title: str
    proponents: np.ndarray
    opponents: np.ndarray
    scores: np.ndarray


def plot_attribution_grid(
    rows: Sequence[GridRow],
    train_images: np.ndarray,
    out_path: str | os.PathLike,
    title: str = "",
) -> None:
    """One row per query: the query, its proponents (green), then its opponents (red).

    ``train_images`` is [N, C, H, W] in [-1, 1]; each row's proponents and opponents index it,
    and its score of each training image is printed above that image.
    """
    n_rows = len(rows)
    n_pos = max((len(row.proponents) for row in rows), default=0)
    n_neg = max((len(row.opponents) for row in rows), default=0)
    gap = 1 if n_neg else 0
    columns = 1 + n_pos + gap + n_neg
    figure = Figure(figsize=(1.15 * columns + 0.4, 1.35 * n_rows + 0.6), layout="constrained")
    axes = figure.subplots(n_rows, columns, squeeze=False)
    for r, row in enumerate(rows):
        scores = row.scores
        cells = [(row.image, row.title, "black")]
        cells += [(train_images[i], f"{scores[i]:+.3g}", "tab:green") for i in row.proponents]
        cells += [None] * (n_pos - len(row.proponents) + gap)
        cells += [(train_images[i], f"{scores[i]:+.3g}", "tab:red") for i in row.opponents]
        for c, ax in enumerate(axes[r]):
            ax.set_xticks([])
            ax.set_yticks([])
            cell = cells[c] if c < len(cells) else None
            if cell is None:
                ax.axis("off")
                continue
            image, text, color = cell
            pixels = to_display(image)
            ax.imshow(
                pixels,
                cmap="gray" if pixels.ndim == 2 else None,
                vmin=0,
                vmax=255,
                interpolation="nearest",
            )
            ax.set_title(text, fontsize=7, color=color)
            for spine in ax.spines.values():
                spine.set_edgecolor(color)
                spine.set_linewidth(2 if c else 1)
    if n_rows:
        head = rows[0]
        axes[0][0].set_title(f"query\n{head.title}", fontsize=7)
        if n_pos:
            axes[0][1].set_title(
                f"proponents\n{head.scores[head.proponents[0]]:+.3g}", fontsize=7, color="tab:green"
            )
        if n_neg:
            first = 1 + n_pos + gap
            axes[0][first].set_title(
                f"opponents\n{head.scores[head.opponents[0]]:+.3g}", fontsize=7, color="tab:red"
            )
    if title:
        figure.suptitle(title, fontsize=9)
    _save_figure(figure, out_path, dpi=110)


# --------------------------------------------------------------------------- tables


def read_benchmarks(root: str | os.PathLike) -> list[dict[str, Any]]:
    """One row per ``benchmark:`` TSV under ``root``: rule (first path part), job, seconds, memory.

    A file with several measured runs (``repeat()``) contributes their mean. A job that ran in
    the job server takes its memory from the peak its log records (``root`` is
    ``logs/<experiment>/benchmarks``, its logs mirror the benchmark paths one level up).
    """
    root = Path(root)
    rows = []
    for path in sorted(root.rglob("*.tsv")):
        relative = path.relative_to(root).with_suffix("")
        with open(path, newline="") as handle:
            entries = list(csv.DictReader(handle, delimiter="\t"))
        if not entries or BENCHMARK_SECONDS not in entries[0]:
            raise CorruptFileError(
                f"{path}: not a Snakemake benchmark file (expected a header with "
                f"{BENCHMARK_SECONDS!r})"
            )
        seconds = [_number(e.get(BENCHMARK_SECONDS)) for e in entries]
        memory = [_number(e.get(BENCHMARK_MEMORY)) for e in entries]
        served = peak_memory_mb(root.parent / relative.with_suffix(".log"))
        if served is not None:  # the job ran in the job server: the TSV measured its client
            memory = [served]
        rows.append(
            {
                "rule": relative.parts[0],
                "job": "/".join(relative.parts[1:]),
                "seconds": float(np.nanmean(seconds)) if seconds else math.nan,
                "max_rss_mb": float(np.nanmax(memory))
                if not all(map(math.isnan, memory))
                else math.nan,
            }
        )
    return rows


def _number(text: Any) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def runtime_table(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per rule: number of jobs, total / mean / max seconds and peak memory, longest total first."""
    table = []
    for rule in _ordered(r["rule"] for r in rows):
        seconds = np.array([r["seconds"] for r in rows if r["rule"] == rule], dtype=float)
        memory = np.array([r["max_rss_mb"] for r in rows if r["rule"] == rule], dtype=float)
        table.append(
            {
                "rule": rule,
                "jobs": int(seconds.size),
                "total_s": float(np.nansum(seconds)),
                "mean_s": float(np.nanmean(seconds)),
                "max_s": float(np.nanmax(seconds)),
                "max_rss_mb": float(np.nanmax(memory)) if np.isfinite(memory).any() else math.nan,
            }
        )
    table.sort(key=lambda row: -row["total_s"])
    return table


_STYLE = (
    "<style>body{font-family:sans-serif;font-size:13px;margin:1em}"
    "table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:2px 8px;"
    "text-align:right}th{background:#f3f3f3}td:first-child{text-align:left}"
    "pre{background:#f7f7f7;padding:1em}</style>"
)


def html_page(title: str, body: str) -> str:
    """A self-contained HTML page (the report shows text/html results in a frame)."""
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"{_STYLE}</head><body><h2>{html.escape(title)}</h2>{body}</body></html>\n"
    )


def config_html(config: Mapping[str, Any]) -> str:
    """The configuration (defaults filled in) as YAML on an HTML page."""
    text = yaml.safe_dump(_plain(config), sort_keys=False, allow_unicode=True)
    return html_page(
        f"Configuration: {config.get('experiment', '')}",
        "<p>The validated configuration of this run, with every default filled in "
        "(src/diffattr/schemas/config.schema.yaml documents each key).</p>"
        f"<pre>{html.escape(text)}</pre>",
    )


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


# --------------------------------------------------------------------------- helpers


def png_data_uri(path: str | os.PathLike) -> str:
    """``data:image/png;base64,...`` of a PNG file."""
    with open(path, "rb") as handle:
        return "data:image/png;base64," + base64.b64encode(handle.read()).decode("ascii")


def _save_figure(figure: Figure, out_path: str | os.PathLike, dpi: int = 120) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    with store.atomic_path(out_path, suffix=".png") as tmp:
        tmp.write_bytes(buffer.getvalue())
