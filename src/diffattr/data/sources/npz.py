"""``data.source: npz``: image and label arrays in one ``.npz`` file."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from diffattr.data.sources.base import (
    ImagePool,
    SourcePools,
    int_labels,
    integer_class_names,
    register_source,
    require,
    split_pool,
)
from diffattr.errors import DataError

#: The two array layouts: official train / val arrays, or one set split by val_pool_fraction.
TWO_SPLITS = ("train_images", "train_labels", "val_images", "val_labels")
ONE_SET = ("images", "labels")


def _npz_images(array: np.ndarray, where: str) -> np.ndarray:
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4 or array.shape[-1] not in (1, 3, 4):
        raise DataError(
            f"{where}: images have shape {array.shape}; expected [n, H, W] or [n, H, W, C] "
            "with C in (1, 3, 4)"
        )
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.floating):
        if array.size and (not np.isfinite(array).all() or array.min() < 0 or array.max() > 1):
            raise DataError(
                f"{where}: float images have values in [{array.min()}, {array.max()}]; "
                "expected [0, 1] (or uint8 0..255)"
            )
        return np.round(array * 255.0).astype(np.uint8)
    raise DataError(f"{where}: images have dtype {array.dtype}; expected uint8 or float in [0, 1]")


def _read_arrays(path: Path) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """(the arrays of one layout, class_names or None)."""
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise DataError(f"data.path = {str(path)!r}: not a readable .npz file ({error})") from error
    with archive:
        keys = set(archive.files)
        for layout in (TWO_SPLITS, ONE_SET):
            if set(layout) <= keys:
                arrays = {key: archive[key] for key in layout}
                break
        else:
            raise DataError(
                f"{path}: npz holds arrays {sorted(keys)}; expected either {sorted(TWO_SPLITS)} "
                f"or {sorted(ONE_SET)} (plus optional 'class_names')"
            )
        names_array = archive["class_names"] if "class_names" in keys else None
    return arrays, names_array


@register_source("npz", keys=("path", "val_pool_fraction"))
def load_npz(cfg: Mapping[str, Any]) -> SourcePools:
    """``train_images/labels`` and ``val_images/labels``, or ``images/labels`` split by
    ``val_pool_fraction``; optional ``class_names``."""
    path = Path(require(cfg, "path", "npz"))
    if not path.is_file():
        raise DataError(f"data.path = {str(path)!r}: npz file does not exist")
    arrays, names_array = _read_arrays(path)

    def checked(prefix: str) -> tuple[np.ndarray, np.ndarray]:
        images = _npz_images(arrays[f"{prefix}images"], f"{path}:{prefix}images")
        labels = int_labels(arrays[f"{prefix}labels"], f"{path}:{prefix}labels")
        if len(images) != len(labels):
            raise DataError(
                f"{path}: {prefix}images has {len(images)} rows but {prefix}labels has "
                f"{len(labels)}; they must match"
            )
        return images, labels

    if "train_images" in arrays:
        train_images, train_labels = checked("train_")
        val_images, val_labels = checked("val_")
        train = ImagePool(train_images, train_labels, np.arange(len(train_labels)))
        val = ImagePool(val_images, val_labels, np.arange(len(val_labels)))
    else:
        images, labels = checked("")
        train_rows, val_rows = split_pool(labels, cfg, str(path))
        train = ImagePool(images[train_rows], labels[train_rows], train_rows)
        val = ImagePool(images[val_rows], labels[val_rows], val_rows)

    if names_array is None:
        return SourcePools(train, val, integer_class_names([train.labels, val.labels]))
    class_names = [str(name) for name in np.asarray(names_array).tolist()]
    max_label = max([int(p.labels.max()) for p in (train, val) if len(p)] or [-1])
    if max_label >= len(class_names):
        raise DataError(
            f"{path}: label {max_label} has no entry in class_names {class_names} "
            f"(labels must be < {len(class_names)})"
        )
    return SourcePools(train=train, val=val, class_names=class_names)
