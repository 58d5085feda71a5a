"""Do a method's proponents look like its query? (the attribution sanity figure)

For every scored (method, K, split): the fraction of each query's top-``k`` proponents, at the
held-out λ, that share the query's class, averaged over the queries. A val query's class is its
label; a generated sample's class is the label the sample-quality classifier gives it
(:mod:`diffattr.sample_quality`). Chance is the share of the query's class in the train split
(averaged the same way): a method that ranks training images at random sits there. This is a
check a reader can do by eye in the proponent grids, not a replacement for the LDS: a method
can find same-class neighbours and still rank them badly against the retraining ground truth.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from diffattr.errors import ConfigError, FeatureMismatchError


def class_agreement(
    support: np.ndarray, query_labels: np.ndarray, train_labels: np.ndarray, top: int
) -> dict[str, Any]:
    """Mean fraction of the ``top`` proponents of each row of ``support`` [n, N] (larger = more
    support) whose train label equals the row's query label, the chance level, and the
    per-query fractions. Ties break by column order.
    """
    scores = np.asarray(support, dtype=np.float64)
    query_labels, train_labels = np.asarray(query_labels), np.asarray(train_labels)
    if scores.shape != (len(query_labels), len(train_labels)):
        raise FeatureMismatchError(
            f"scores have shape {scores.shape}; expected [{len(query_labels)} queries, "
            f"{len(train_labels)} training rows]"
        )
    if not 1 <= top <= len(train_labels):
        raise ConfigError(f"top = {top}; expected 1 .. {len(train_labels)} proponents")
    order = np.argsort(-scores, axis=1, kind="stable")[:, :top]
    shared = (train_labels[order] == query_labels[:, None]).mean(axis=1)
    share = {c: float(np.mean(train_labels == c)) for c in np.unique(query_labels)}
    chance = np.array([share[c] for c in query_labels])
    return {
        "top": top,
        "agreement": float(shared.mean()),
        "chance": float(chance.mean()),
        "ratio": float(shared.mean() / chance.mean()) if chance.mean() > 0 else float("nan"),
        "per_query": np.round(shared, 4).tolist(),
    }


def plot_sanity(rows: Sequence[Mapping[str, Any]], out_path: str | os.PathLike) -> None:
    """Bars: top-k class agreement per method, one panel per split, chance as a dashed line."""
    from matplotlib.figure import Figure

    from diffattr.sample_quality import save_png_figure

    splits = list(dict.fromkeys(r["split"] for r in rows)) or ["val"]
    figure = Figure(figsize=(4.2 * len(splits), 3.0), layout="constrained")
    axes = np.atleast_1d(figure.subplots(1, len(splits), squeeze=False)[0])
    for ax, split in zip(axes, splits, strict=True):
        part = [r for r in rows if r["split"] == split]
        names = [f"{r['method']}" + (f" K{r['K']}" if int(r.get("K", 0)) else "") for r in part]
        values = [100 * r["agreement"] for r in part]
        ax.barh(range(len(part)), values, color="tab:blue")
        for y, (value, r) in enumerate(zip(values, part, strict=True)):
            ax.text(
                value + 1, y, f"{value:.0f}% ({r['ratio']:.1f}× chance)", va="center", fontsize=7
            )
        if part:
            chance = 100 * float(np.mean([r["chance"] for r in part]))
            ax.axvline(chance, color="black", linestyle="--", linewidth=1)
            ax.text(chance, len(part) - 0.4, " chance", fontsize=7)
        ax.set_yticks(range(len(part)), names, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, 130)
        top = part[0]["top"] if part else 5
        what = "label" if split == "val" else "classifier label"
        ax.set_xlabel(f"% of top-{top} proponents sharing the query's {what}", fontsize=8)
        ax.set_title(f"{split} queries", fontsize=9)
    save_png_figure(figure, out_path)
