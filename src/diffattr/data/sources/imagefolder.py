"""``data.source: imagefolder``: image files under a root directory, listed by a CSV."""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from diffattr.data.preprocess import to_uint8_hwc
from diffattr.data.sources.base import (
    ImagePool,
    LazyImages,
    SourcePools,
    option,
    register_source,
    require,
    split_pool,
)
from diffattr.errors import DataError

#: Column of an image-folder CSV that assigns rows to the train / validation pools.
SPLIT_COLUMN = "split"


def _open_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            image.load()
            return to_uint8_hwc(image, str(path))
    except FileNotFoundError as error:
        raise DataError(f"image file {path} does not exist (listed in the data CSV)") from error
    except OSError as error:
        raise DataError(f"image file {path} cannot be read as an image: {error}") from error


def _read_csv(csv_path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(csv_path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = list(reader.fieldnames or [])
        rows = list(reader)
    return columns, rows


def _check_columns(cfg: Mapping[str, Any], columns: list[str], where: str) -> None:
    label_column = option(cfg, "label_column")
    path_column = option(cfg, "path_column")
    caption_column = option(cfg, "caption_column")
    if label_column not in columns:
        raise DataError(
            f"{where}: label column {label_column!r} (data.label_column) is missing; "
            f"columns are {columns}"
        )
    if path_column not in columns and "name" not in columns:
        raise DataError(
            f"{where}: neither the path column {path_column!r} (data.path_column) nor an "
            f"ArtBench-style 'name' column exists; columns are {columns}"
        )
    if caption_column is not None and caption_column not in columns:
        raise DataError(
            f"{where}: caption column {caption_column!r} (data.caption_column) is missing; "
            f"columns are {columns}"
        )


def _pool_rows(
    cfg: Mapping[str, Any],
    columns: list[str],
    rows: list[dict[str, str]],
    labels: np.ndarray,
    where: str,
) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) CSV rows: by the ``split`` column if there is one, else drawn."""
    if SPLIT_COLUMN not in columns:
        return split_pool(labels, cfg, where)
    split_values = np.array([row[SPLIT_COLUMN] for row in rows])
    names = {"train": option(cfg, "train_split_name"), "val": option(cfg, "val_split_name")}
    chosen = {}
    for side, name in names.items():
        chosen[side] = np.flatnonzero(split_values == name)
        if not len(chosen[side]):
            raise DataError(
                f"{where}: no row has {SPLIT_COLUMN}={name!r} (data.{side}_split_name); "
                f"values present: {sorted(set(split_values.tolist()))}"
            )
    return chosen["train"], chosen["val"]


@register_source(
    "imagefolder",
    keys=(
        "path",
        "csv",
        "label_column",
        "path_column",
        "caption_column",
        "train_split_name",
        "val_split_name",
        "val_pool_fraction",
    ),
)
def load_imagefolder(cfg: Mapping[str, Any]) -> SourcePools:
    """Images under ``path`` listed in ``csv`` (path or ArtBench ``name``, label, caption,
    optional ``split`` column; without one the pools are drawn by ``val_pool_fraction``)."""
    root = Path(require(cfg, "path", "imagefolder"))
    csv_path = Path(require(cfg, "csv", "imagefolder"))
    if not root.is_dir():
        raise DataError(f"data.path = {str(root)!r}: image root directory does not exist")
    if not csv_path.is_file():
        raise DataError(f"data.csv = {str(csv_path)!r}: CSV file does not exist")
    columns, rows = _read_csv(csv_path)
    where = f"data.csv {str(csv_path)!r}"
    _check_columns(cfg, columns, where)
    if not rows:
        raise DataError(f"{where}: CSV has a header but no rows")
    label_column = option(cfg, "label_column")
    path_column = option(cfg, "path_column")
    caption_column = option(cfg, "caption_column")
    label_strings = [row[label_column] for row in rows]
    class_names = sorted(set(label_strings))
    index = {name: label for label, name in enumerate(class_names)}
    labels = np.array([index[name] for name in label_strings], dtype=np.int64)
    if path_column in columns:
        relative = [row[path_column] for row in rows]
    else:
        relative = [f"{row[label_column]}/{row['name']}" for row in rows]
    paths = [str(root / rel) for rel in relative]
    captions = None if caption_column is None else [row[caption_column] for row in rows]
    train, val = _pool_rows(cfg, columns, rows, labels, where)

    def load_many(source_rows: np.ndarray) -> list[np.ndarray]:
        return [_open_image(Path(paths[int(r)])) for r in source_rows]

    def pool(pool_rows: np.ndarray) -> ImagePool:
        return ImagePool(
            images=LazyImages(load_many, pool_rows),
            labels=labels[pool_rows],
            ids=pool_rows,
            captions=None if captions is None else [captions[r] for r in pool_rows],
            paths=[paths[r] for r in pool_rows],
        )

    return SourcePools(train=pool(train), val=pool(val), class_names=class_names)
