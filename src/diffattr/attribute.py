"""Ad-hoc attribution outside the benchmark: a pretrained model and folders of images.

``diffattr attribute --model DIR --train DIR_OR_CSV --query DIR`` scores every training image for
every query image with TRAK or D-TRAK, without retraining anything:

1. the model is a diffusers ``DDPMPipeline`` directory (``unet/`` + ``scheduler/``, e.g. written by
   ``save_pretrained`` or by this workflow's training rules);
2. images are preprocessed to the UNet's ``sample_size`` and ``in_channels``
   (:func:`diffattr.data.preprocess_images`);
3. features are the projected mean gradients over K uniform timesteps of the method's output
   function (``trak``: the loss, ``dtrak``: ‖ε̂‖²/d), as in the workflow;
4. scores τ = Ψ(ΦᵀΦ + λI)⁻¹Φᵀ at one λ.

**Noise is keyed by image content.** Each image's id is a 63-bit hash of its preprocessed pixels,
and the diffusion noise of its features is keyed by that id (:mod:`diffattr.noise`). An image
therefore has the same features whether it sits in the training or the query folder, whatever
its file name: a query copied from the training set finds its source with identical features.

**Default λ** (``--lambda`` not given): the mean non-zero eigenvalue of the kernel ΦᵀΦ,
‖Φ‖²_F / min(N, Z). It sets the ridge to the typical scale of the spectrum, so directions with
much less energy than average are damped and the dominant ones are kept. It is a heuristic with no
held-out check; the workflow chooses λ on held-out subsets instead.

Outputs in ``--out``: ``scores.h5`` (the workflow's score layout: ``scores`` [1, n, N],
``lambdas``, ``train_ids``, ``test_ids``, plus ``train_paths`` / ``query_paths``),
``top_k.csv`` (query, rank, train, score) and a gallery: ``gallery.html`` (self-contained,
images embedded) and/or ``gallery.png``.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import html
import io
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import h5py
import numpy as np

from diffattr import store
from diffattr.errors import ConfigError, CorruptFileError, DataError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
#: Output function of each method (the workflow's ``methods`` block uses the same pairs).
METHOD_OUTPUT_FNS = {"trak": "loss", "dtrak": "square"}
GALLERY_KINDS = ("html", "png", "both", "none")
THUMBNAIL_PIXELS = 96


@dataclass
class Attribution:
    """Scores of every training image (columns) for every query image (rows) at one λ."""

    scores: np.ndarray  # float32 [n_query, n_train]
    train_paths: list[str]
    query_paths: list[str]
    train_ids: np.ndarray
    query_ids: np.ndarray
    lambda_: float
    attrs: dict[str, Any]

    def top_k(self, k: int) -> np.ndarray:
        """[n_query, k] training columns ranked by score, highest first (ties by column)."""
        k = min(int(k), self.scores.shape[1])
        return np.argsort(-self.scores, axis=1, kind="stable")[:, :k]

    def rank_of(self, query: int, train: int) -> int:
        """1-based rank of training image ``train`` among query ``query``'s scores."""
        row = self.scores[query]
        return int(np.sum(row > row[train]) + 1)


# --------------------------------------------------------------------------- inputs


def list_images(
    source: str | os.PathLike, path_column: str = "path", role: str = "train"
) -> list[Path]:
    """Image files of a folder (recursively, sorted) or of a CSV's ``path_column``.

    CSV paths are relative to the CSV's folder unless absolute.
    """
    source = Path(source)
    if source.is_dir():
        files = sorted(
            p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not files:
            raise DataError(
                f"--{role} {str(source)!r}: the folder holds no image files "
                f"({', '.join(IMAGE_SUFFIXES)})"
            )
        return files
    if source.is_file() and source.suffix.lower() == ".csv":
        with open(source, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = list(reader.fieldnames or [])
            rows = list(reader)
        if path_column not in columns:
            raise DataError(
                f"--{role} {str(source)!r}: the CSV has no column {path_column!r} "
                f"(--path-column); its columns are {columns}"
            )
        files = [Path(row[path_column]) for row in rows]
        files = [p if p.is_absolute() else source.parent / p for p in files]
        missing = [str(p) for p in files if not p.is_file()]
        if missing:
            raise DataError(
                f"--{role} {str(source)!r}: {len(missing)} listed image(s) do not exist, "
                f"e.g. {missing[:3]}"
            )
        if not files:
            raise DataError(f"--{role} {str(source)!r}: the CSV lists no images")
        return files
    if source.is_file():
        raise DataError(f"--{role} {str(source)!r}: expected an image folder or a .csv file")
    raise DataError(f"--{role} {str(source)!r}: no such image folder or CSV file")


def load_images(paths: Sequence[Path], resolution: int, channels: int) -> np.ndarray:
    """Read and preprocess images to float32 [n, channels, resolution, resolution] in [-1, 1]."""
    from PIL import Image

    from diffattr.data import preprocess_images

    images = []
    for path in paths:
        try:
            with Image.open(path) as image:
                image.load()
                images.append(image.convert("L" if channels == 1 else "RGB"))
        except OSError as error:
            raise DataError(f"{path}: cannot be read as an image ({error})") from error
    return preprocess_images(images, resolution, channels)


def content_ids(images: np.ndarray) -> np.ndarray:
    """A 63-bit id per image from a hash of its preprocessed pixels (keys the feature noise)."""
    ids = np.empty(len(images), dtype=np.int64)
    for row, image in enumerate(images):
        digest = hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=8).digest()
        ids[row] = int.from_bytes(digest, "little") >> 1
    return ids


def default_lambda(train_features: np.ndarray) -> float:
    """The mean non-zero eigenvalue of ΦᵀΦ: ‖Φ‖²_F / min(N, Z) (see the module docstring)."""
    phi = np.asarray(train_features, dtype=np.float64)
    value = float(np.sum(phi * phi) / min(phi.shape))
    if not np.isfinite(value) or value <= 0:
        raise DataError(
            f"cannot derive λ from training features with squared norm {value}; pass --lambda"
        )
    return value


# --------------------------------------------------------------------------- attribution


def attribute(
    model_dir: str | os.PathLike,
    train_paths: Sequence[Path],
    query_paths: Sequence[Path],
    method: str = "dtrak",
    K: int = 10,
    proj_dim: int = 4096,
    proj_seed: int = 42,
    noise_seed: int = 0,
    lambda_: float | None = None,
    batch_size: int = 16,
    device: str = "auto",
    progress: IO[str] | None = None,
) -> Attribution:
    """TRAK / D-TRAK scores of every training image for every query image (no retraining)."""
    from diffattr import features
    from diffattr.models import load_model, model_kind, resolve_device
    from diffattr.projection_structured import make_feature_projector
    from diffattr.scoring import trak_scores, validate_lambdas

    if method not in METHOD_OUTPUT_FNS:
        raise ConfigError(f"--method {method!r} is not known; valid: {sorted(METHOD_OUTPUT_FNS)}")
    if lambda_ is not None:
        validate_lambdas([lambda_])
    if model_kind(model_dir) != "unet":
        raise ConfigError(
            f"--model {str(model_dir)!r} is a {model_kind(model_dir)!r} model; `diffattr attribute` "
            "scores pixel-space DDPM pipelines (UNet2DModel + scheduler)"
        )
    model, scheduler = load_model(model_dir, resolve_device(device))
    resolution, channels = model_image_shape(model, model_dir)
    steps = features.select_timesteps(K, "uniform", int(scheduler.config.num_train_timesteps))
    grad_dim = features.num_trainable_parameters(model)
    projector = make_feature_projector(model, proj_dim, proj_seed, "normal", "auto")
    output_fn = METHOD_OUTPUT_FNS[method]

    matrices, ids = {}, {}
    for role, paths in (("train", train_paths), ("query", query_paths)):
        images = load_images(paths, resolution, channels)
        ids[role] = content_ids(images)
        logger.info("%s: %d images, features ...", role, len(paths))
        matrices[role] = features.extract_features(
            model,
            scheduler,
            images,
            ids[role],
            output_fn,
            steps,
            noise_seed,
            projector,
            batch_size,
            progress=progress,
        )
    chosen = default_lambda(matrices["train"]) if lambda_ is None else float(lambda_)
    scores = trak_scores(matrices["train"], matrices["query"], [chosen])[0]
    attrs = {
        "method": method,
        "output_fn": output_fn,
        "K": K,
        "timesteps": steps,
        "noise_seed": noise_seed,
        "noise_key": "content hash of the preprocessed image",
        "model_path": str(model_dir),
        "model_digest": store.digest_directory(model_dir),
        "grad_dim": grad_dim,
        "resolution": resolution,
        "channels": channels,
        "lambda_rule": "mean non-zero eigenvalue of the kernel" if lambda_ is None else "given",
        **{
            f"proj_{k}" if not k.startswith("proj") else k: v
            for k, v in projector.describe().items()
        },
    }
    return Attribution(
        scores=scores,
        train_paths=[str(p) for p in train_paths],
        query_paths=[str(p) for p in query_paths],
        train_ids=ids["train"],
        query_ids=ids["query"],
        lambda_=chosen,
        attrs=attrs,
    )


def model_image_shape(model: Any, where: str | os.PathLike) -> tuple[int, int]:
    """(resolution, channels) the UNet expects, from its config."""
    size = model.config.sample_size
    if isinstance(size, (list, tuple)):
        if len(set(size)) != 1:
            raise ConfigError(f"{where}: non-square sample_size {list(size)} is not supported")
        size = size[0]
    channels = int(model.config.in_channels)
    if size is None or channels not in (1, 3):
        raise ConfigError(
            f"{where}: the UNet has sample_size={size!r}, in_channels={channels}; expected a "
            "square image size and 1 or 3 channels"
        )
    return int(size), channels


# --------------------------------------------------------------------------- outputs


def write_scores(result: Attribution, path: str | os.PathLike) -> None:
    """``scores.h5`` in the workflow's score layout (readable by ``scoring.read_scores``)."""
    strings = h5py.string_dtype("utf-8")
    attrs = {**result.attrs, "lambda": result.lambda_, "score_kind": result.attrs["method"]}
    with store.h5_writer(path, attrs) as handle:
        handle.create_dataset("scores", data=result.scores[None].astype(np.float32))
        handle.create_dataset("lambdas", data=np.array([result.lambda_], dtype=np.float64))
        handle.create_dataset("train_ids", data=result.train_ids)
        handle.create_dataset("test_ids", data=result.query_ids)
        handle.create_dataset("train_paths", data=result.train_paths, dtype=strings)
        handle.create_dataset("query_paths", data=result.query_paths, dtype=strings)


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


def attribute_job(
    model_dir: str,
    train: str,
    query: str,
    out_dir: str,
    method: str = "dtrak",
    top_k: int = 10,
    gallery: str = "both",
    path_column: str = "path",
    progress: IO[str] | None = None,
    **settings: Any,
) -> dict[str, str]:
    """Score folders of images against a pretrained model and write every output; returns the
    output paths by name. ``settings`` go to :func:`attribute` (K, proj_dim, lambda_, ...)."""
    if gallery not in GALLERY_KINDS:
        raise ConfigError(f"--gallery {gallery!r}; valid: {list(GALLERY_KINDS)}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ConfigError(f"--top-k {top_k!r}; expected a positive integer")
    if not Path(model_dir).is_dir():
        raise CorruptFileError(f"--model {model_dir!r}: no such model directory")
    train_paths = list_images(train, path_column, "train")
    query_paths = list_images(query, path_column, "query")
    result = attribute(model_dir, train_paths, query_paths, method, progress=progress, **settings)
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
            train_paths=[_text(v) for v in handle["train_paths"][()]],
            query_paths=[_text(v) for v in handle["query_paths"][()]],
            train_ids=handle["train_ids"][()],
            query_ids=handle["test_ids"][()],
            lambda_=float(handle["lambdas"][0]),
            attrs=attrs,
        )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


__all__ = [
    "Attribution",
    "METHOD_OUTPUT_FNS",
    "attribute",
    "attribute_job",
    "content_ids",
    "default_lambda",
    "list_images",
    "read_attribution",
]
