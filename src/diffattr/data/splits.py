"""Train / validation splits: draw them from the pools and store them as one HDF5 file.

Layout of the dataset file (written atomically by :func:`diffattr.store.h5_writer`)::

    /train/images    float32 [n_train, C, H, W] in [-1, 1]
    /train/labels    int64   [n_train]          remapped to 0..C-1
    /train/ids       int64   [n_train]          row index in the original source
    /train/captions  utf-8   [n_train]          only when the source has captions
    /val/...         the same for the validation split

The order of ``/train`` rows defines the row order of every train-side matrix downstream.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import h5py
import numpy as np

from diffattr.data.preprocess import check_preprocess_options, preprocess_image
from diffattr.data.sources import ImagePool, load_images, load_source, option, split_seed
from diffattr.errors import ConfigError, CorruptFileError, DataError
from diffattr.store import decode_attr, h5_writer, open_h5

SPLITS = ("train", "val")
_BATCH = 256


@dataclasses.dataclass(frozen=True)
class Split:
    """One stored split, fully in memory."""

    images: np.ndarray
    labels: np.ndarray
    ids: np.ndarray
    captions: list[str] | None
    class_names: list[str]

    def __len__(self) -> int:
        return len(self.labels)


def select_rows(labels: np.ndarray, size: Any, seed: int, stratify: bool, where: str) -> np.ndarray:
    """Positions of ``size`` rows drawn from a pool with the reference ``train_test_split`` call.

    The rows come in the shuffled order ``train_test_split`` returns. A size equal to the pool
    takes the whole pool in original order; a larger size is an error.
    """
    from sklearn.model_selection import train_test_split

    n = len(labels)
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ConfigError(f"{where} = {size!r}; expected a positive integer number of rows")
    if size > n:
        raise DataError(
            f"{where} = {size} is larger than the pool it is drawn from ({n} rows); use at most {n}"
        )
    if size == n:
        return np.arange(n, dtype=np.int64)
    try:
        chosen, _ = train_test_split(
            np.arange(n),
            train_size=int(size),
            random_state=seed,
            stratify=labels if stratify else None,
        )
    except ValueError as error:
        raise DataError(
            f"{where} = {size}: cannot draw it from a pool of {n} rows "
            f"(stratify={stratify}): {error}"
        ) from error
    return np.asarray(chosen, dtype=np.int64)


def _write_split(
    group: h5py.Group,
    pool: ImagePool,
    resolution: int,
    channels: int,
    center_crop: int | None,
    side: str,
) -> None:
    n = len(pool)
    shape = (n, channels, resolution, resolution)
    row_bytes = 4 * channels * resolution * resolution
    rows_per_chunk = max(1, min(n, (1 << 20) // row_bytes))
    images = group.create_dataset(
        "images", shape=shape, dtype=np.float32, chunks=(rows_per_chunk, *shape[1:]) if n else None
    )
    for start in range(0, n, _BATCH):
        positions = np.arange(start, min(start + _BATCH, n))
        batch = load_images(pool.images, positions)
        out = np.empty((len(positions), *shape[1:]), dtype=np.float32)
        for i, (position, image) in enumerate(zip(positions, batch, strict=True)):
            where = f"{side} row {int(position)} (source id {int(pool.ids[position])})"
            out[i] = preprocess_image(image, resolution, channels, center_crop, where)
        images[start : start + len(positions)] = out
    group.create_dataset("labels", data=pool.labels.astype(np.int64))
    group.create_dataset("ids", data=pool.ids.astype(np.int64))
    if pool.captions is not None:
        group.create_dataset("captions", data=list(pool.captions), dtype=h5py.string_dtype("utf-8"))


def prepare_dataset(cfg: Mapping[str, Any], out_path: str | os.PathLike) -> None:
    """Load the source, draw the train and val splits, preprocess and write them to one HDF5."""
    resolution = option(cfg, "resolution")
    channels = option(cfg, "channels")
    center_crop = option(cfg, "center_crop")
    check_preprocess_options(resolution, channels, center_crop)
    seed = split_seed(cfg)
    stratify = bool(option(cfg, "stratify"))
    sizes = {}
    for side in SPLITS:
        sizes[side] = option(cfg, f"{side}_size")
        if sizes[side] is None:
            raise ConfigError(f"data.{side}_size is required (number of {side} rows), got null")

    pools = load_source(cfg)
    chosen = {}
    for side in SPLITS:
        pool = getattr(pools, side)
        positions = select_rows(
            pool.stratify_labels, sizes[side], seed, stratify, f"data.{side}_size"
        )
        chosen[side] = pool.take(positions)

    attrs = {
        "kind": "dataset",
        "source": cfg.get("source"),
        "name": option(cfg, "name"),
        "path": None if option(cfg, "path") is None else str(option(cfg, "path")),
        "csv": None if option(cfg, "csv") is None else str(option(cfg, "csv")),
        "classes": option(cfg, "classes"),
        "class_names": list(pools.class_names),
        "resolution": int(resolution),
        "channels": int(channels),
        "center_crop": center_crop,
        "split_seed": seed,
        "stratify": stratify,
        "train_size": int(sizes["train"]),
        "val_size": int(sizes["val"]),
        "n_train": len(chosen["train"]),
        "n_val": len(chosen["val"]),
        "caption_template": option(cfg, "caption_template"),
    }
    with h5_writer(out_path, attrs) as handle:
        for side in SPLITS:
            _write_split(
                handle.create_group(side), chosen[side], resolution, channels, center_crop, side
            )


def load_split(
    dataset_path: str | os.PathLike, split: str, *, images: bool = True, first: int | None = None
) -> Split:
    """Read the ``train`` or ``val`` split of a dataset file written by :func:`prepare_dataset`
    (``images=False``: everything but the images, which are then an empty [0] array; ``first``:
    only the split's first rows, read as such from the file)."""
    if first is not None and (isinstance(first, bool) or not isinstance(first, int) or first < 1):
        raise ConfigError(f"first = {first!r} is not valid; expected None or an integer >= 1")
    rows = slice(None) if first is None else slice(0, first)
    if split not in SPLITS:
        raise ConfigError(f"split = {split!r} is not a dataset split; valid: {list(SPLITS)}")
    with open_h5(dataset_path) as handle:
        if split not in handle:
            raise CorruptFileError(
                f"{dataset_path}: has no group {split!r}; it has {sorted(handle)}. "
                "Delete it and rerun the rule that prepares the dataset."
            )
        group = handle[split]
        missing = [name for name in ("images", "labels", "ids") if name not in group]
        if missing:
            raise CorruptFileError(f"{dataset_path}: group {split!r} lacks datasets {missing}")
        captions = None
        if "captions" in group:
            captions = [
                c.decode() if isinstance(c, bytes) else str(c) for c in group["captions"][rows]
            ]
        class_names = decode_attr(handle.attrs.get("class_names", "json:[]"))
        return Split(
            images=np.asarray(group["images"][rows] if images else [], dtype=np.float32),
            labels=np.asarray(group["labels"][rows], dtype=np.int64),
            ids=np.asarray(group["ids"][rows], dtype=np.int64),
            captions=captions,
            class_names=list(class_names),
        )
