"""``diffattr attribute``: a thin command line over :class:`diffattr.api.Attributor`.

``diffattr attribute --model DIR_OR_HUB_ID --train DIR_OR_CSV --query DIR`` scores every training
image for every query image with TRAK or D-TRAK, without retraining anything. The model is a
diffusers ``DDPMPipeline`` checkpoint (``model_index.json``, ``unet/``, ``scheduler/``: a folder
written by ``save_pretrained``, by this workflow's training rules, or a hub id in the local
cache); images are preprocessed to the UNet's size and channels; features are the workflow's
projected mean gradients over K uniform timesteps (``trak``: the loss, ``dtrak``: ‖ε̂‖²/d), the
noise of each image keyed by a hash of its pixels (so a query copied from the training set has
its source's features); scores are τ = Ψ(ΦᵀΦ + λI)⁻¹Φᵀ at one λ (default: the mean non-zero
eigenvalue of ΦᵀΦ). See :mod:`diffattr.api` and docs/api.md. With ``--cache DIR`` the training
features are stored there and reused by later calls with the same model, images and settings.

Outputs in ``--out``: ``scores.h5`` (the workflow's score layout: ``scores`` [1, n, N],
``lambdas``, ``train_ids``, ``test_ids``, plus ``train_paths`` / ``query_paths``),
``top_k.csv`` (query, rank, train, score) and a gallery: ``gallery.html`` (self-contained,
images embedded) and/or ``gallery.png``.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from diffattr import files, store
from diffattr.api import (
    METHOD_OUTPUT_FNS,
    Attribution,
    AttributionSettings,
    Attributor,
    Runtime,
    content_ids,
    default_lambda,
    list_images,
)
from diffattr.errors import ConfigError, CorruptFileError

logger = logging.getLogger(__name__)

GALLERY_KINDS = ("html", "png", "both", "none")
THUMBNAIL_PIXELS = 96


def attribute(
    model_dir: str | os.PathLike,
    train_paths: Sequence[Path] | Any,
    query_paths: Sequence[Path] | Any,
    settings: AttributionSettings | None = None,
    *,
    runtime: Runtime | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Attribution:
    """TRAK / D-TRAK scores of every training image for every query image (no retraining):
    one :class:`diffattr.api.Attributor`, one query batch. ``settings``, ``runtime`` and
    ``cache_dir`` are the attributor's (the keyword options ``method``, ``K``, ``proj_dim``,
    ``proj_seed``, ``noise_seed``, ``lambda_`` and ``batch_size``, ``device``, ``progress``
    this function took before are fields of ``settings`` and ``runtime``)."""
    attributor = Attributor(model_dir, train_paths, settings, runtime=runtime, cache_dir=cache_dir)
    return attributor.score(query_paths)


@dataclass(frozen=True, kw_only=True)
class OutputOptions:
    """What ``diffattr attribute`` writes beside ``scores.h5``: ``top_k.csv`` with the ``top_k``
    best training images per query, and the ``gallery`` (html, png, both or none)."""

    top_k: int = 10
    gallery: str = "both"

    def __post_init__(self) -> None:
        if self.gallery not in GALLERY_KINDS:
            raise ConfigError(f"--gallery {self.gallery!r}; valid: {list(GALLERY_KINDS)}")
        top_k = self.top_k
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ConfigError(f"--top-k {top_k!r}; expected a positive integer")


# --------------------------------------------------------------------------- outputs


def write_scores(result: Attribution, path: str | os.PathLike) -> None:
    """``scores.h5`` in the workflow's score layout (readable by ``files.read_scores``), with
    ``lds_sign = -1`` (TRAK scores: τ > 0 means the training image supports the query)."""
    strings = h5py.string_dtype("utf-8")
    attrs = {
        **result.attrs,
        "lambda": result.lambda_,
        "score_kind": result.attrs["method"],
        "lds_sign": -1,
    }
    files.write_scores(
        path,
        files.Scores(
            result.scores[None], [result.lambda_], result.train_ids, result.query_ids, attrs
        ),
        per_lambda_chunks=False,
        extra={
            "train_paths": (result.train_paths, strings),
            "query_paths": (result.query_paths, strings),
        },
    )


def write_top_k(result: Attribution, k: int, path: str | os.PathLike) -> None:
    """``top_k.csv``: one row per (query, rank) with the training image's path and score."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["query", "rank", "train", "score"])
    for q, columns in enumerate(result.top_k(k)):
        for rank, column in enumerate(columns, start=1):
            writer.writerow(
                [
                    result.query_paths[q],
                    rank,
                    result.train_paths[column],
                    f"{result.scores[q, column]:.6g}",
                ]
            )
    store.write_text(path, buffer.getvalue())


def thumbnail_png(path: str | os.PathLike, pixels: int = THUMBNAIL_PIXELS) -> bytes:
    """The image at ``path`` scaled to ``pixels`` on its longer side (nearest when enlarging)."""
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB" if image.mode not in ("L", "RGB") else image.mode)
        scale = pixels / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.NEAREST if scale > 1 else Image.BILINEAR)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_html_gallery(result: Attribution, k: int, path: str | os.PathLike) -> None:
    """A self-contained HTML page: each query beside its top-k training images and scores."""
    cache: dict[str, str] = {}

    def img(source: str, title: str) -> str:
        if source not in cache:
            cache[source] = base64.b64encode(thumbnail_png(source)).decode("ascii")
        return (
            f"<img src='data:image/png;base64,{cache[source]}' title='{html.escape(title)}' "
            f"alt='{html.escape(Path(source).name)}'>"
        )

    rows = []
    for q, columns in enumerate(result.top_k(k)):
        query = result.query_paths[q]
        cells = [f"<td class='query'>{img(query, query)}<br>{html.escape(Path(query).name)}</td>"]
        for rank, column in enumerate(columns, start=1):
            train = result.train_paths[column]
            cells.append(
                f"<td>{img(train, train)}<br>#{rank} {html.escape(Path(train).name)}"
                f"<br>{result.scores[q, column]:+.4g}</td>"
            )
        rows.append("<tr>" + "".join(cells) + "</tr>")
    method = html.escape(str(result.attrs.get("method")))
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>diffattr attribution</title>"
        "<style>body{font-family:sans-serif;font-size:12px}td{text-align:center;padding:4px;"
        "vertical-align:top}td.query{border-right:3px solid #333}img{image-rendering:pixelated;"
        "width:96px}</style></head><body>"
        f"<h2>Top {k} training images per query ({method}, λ = {result.lambda_:.4g})</h2>"
        f"<p>Model: {html.escape(str(result.attrs.get('model_path')))}. Score τ &gt; 0: the "
        "training image supports the query.</p><table>" + "".join(rows) + "</table></body></html>\n"
    )
    store.write_text(path, page)


def write_png_gallery(
    result: Attribution, k: int, path: str | os.PathLike, max_queries: int = 16
) -> None:
    """A PNG grid: the first ``max_queries`` queries (rows), each with its top-k images."""
    from matplotlib.figure import Figure
    from PIL import Image

    top = result.top_k(k)[:max_queries]
    columns = 1 + top.shape[1]
    figure = Figure(figsize=(1.2 * columns, 1.35 * len(top) + 0.4), layout="constrained")
    axes = figure.subplots(len(top), columns, squeeze=False)
    for q, ranked in enumerate(top):
        cells = [(result.query_paths[q], "query", "black")]
        cells += [
            (result.train_paths[c], f"#{r} {result.scores[q, c]:+.3g}", "tab:green")
            for r, c in enumerate(ranked, start=1)
        ]
        for ax, (source, title, color) in zip(axes[q], cells, strict=True):
            with Image.open(io.BytesIO(thumbnail_png(source))) as image:
                pixels = np.asarray(image)
            ax.imshow(pixels, cmap="gray" if pixels.ndim == 2 else None, interpolation="nearest")
            ax.set_title(title, fontsize=7, color=color)
            ax.set_xticks([])
            ax.set_yticks([])
    figure.suptitle(f"{result.attrs.get('method')}: top {top.shape[1]} training images", fontsize=9)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    with store.atomic_path(path, suffix=".png") as tmp:
        tmp.write_bytes(buffer.getvalue())


def write_outputs(result: Attribution, out_dir: str, outputs: OutputOptions) -> dict[str, str]:
    """Write every output of ``diffattr attribute`` for ``result`` into ``out_dir``; returns
    the output paths by name. (``attribute_and_write``, which also computed ``result``, is
    gone: call :func:`attribute`, then this.)"""
    top_k, gallery = outputs.top_k, outputs.gallery
    out = Path(out_dir)
    written = {"scores": str(out / "scores.h5"), "top_k": str(out / "top_k.csv")}
    write_scores(result, written["scores"])
    write_top_k(result, top_k, written["top_k"])
    if gallery in ("html", "both"):
        written["gallery_html"] = str(out / "gallery.html")
        write_html_gallery(result, top_k, written["gallery_html"])
    if gallery in ("png", "both"):
        written["gallery_png"] = str(out / "gallery.png")
        write_png_gallery(result, top_k, written["gallery_png"])
    return written


def read_attribution(path: str | os.PathLike) -> Attribution:
    """Read a ``scores.h5`` written by :func:`write_scores`."""
    with store.open_h5(path) as handle:
        missing = [
            name
            for name in ("scores", "lambdas", "train_paths", "query_paths")
            if name not in handle
        ]
        if missing:
            raise CorruptFileError(f"{path}: lacks {missing}; not a `diffattr attribute` file")
        attrs = {key: store.decode_attr(value) for key, value in handle.attrs.items()}
        return Attribution(
            scores=handle["scores"][0],
            train_paths=[store.decode_text(v) for v in handle["train_paths"][()]],
            query_paths=[store.decode_text(v) for v in handle["query_paths"][()]],
            train_ids=handle["train_ids"][()],
            query_ids=handle["test_ids"][()],
            lambda_=float(handle["lambdas"][0]),
            attrs=attrs,
        )


__all__ = [
    "Attribution",
    "Attributor",
    "METHOD_OUTPUT_FNS",
    "OutputOptions",
    "attribute",
    "content_ids",
    "default_lambda",
    "list_images",
    "read_attribution",
    "write_outputs",
]
