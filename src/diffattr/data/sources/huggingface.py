"""``data.source: huggingface``: a ``datasets`` DatasetDict from the hub cache or from disk."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from diffattr.data.preprocess import to_uint8_hwc
from diffattr.data.sources.base import (
    ImagePool,
    LazyImages,
    SourcePools,
    int_labels,
    integer_class_names,
    option,
    register_source,
)
from diffattr.errors import ConfigError, DataError

SIDES = ("train", "val")


def _import_datasets() -> Any:
    try:
        import datasets
    except ImportError as error:
        raise ImportError(
            "data.source 'huggingface' needs the `datasets` package: pip install datasets "
            "(or pip install 'diffattr[hub]')"
        ) from error
    return datasets


def _open(cfg: Mapping[str, Any]) -> tuple[Any, str]:
    """(the DatasetDict of ``data.name`` or ``data.path``, where it came from for messages)."""
    datasets = _import_datasets()
    name, path = option(cfg, "name"), option(cfg, "path")
    if (name is None) == (path is None):
        raise ConfigError(
            f"source 'huggingface' needs exactly one of data.name (hub name, e.g. 'cifar10') "
            f"and data.path (a DatasetDict saved with save_to_disk); got name={name!r}, "
            f"path={path!r}"
        )
    if path is not None:
        where = f"data.path = {str(path)!r}"
        if not Path(path).exists():
            raise DataError(f"{where}: saved dataset directory does not exist")
        loaded = datasets.load_from_disk(str(path))
    else:
        where = f"data.name = {name!r}"
        try:
            loaded = datasets.load_dataset(name)
        except Exception as error:  # the hub client raises many unrelated types
            raise DataError(
                f"{where}: `datasets.load_dataset` failed ({type(error).__name__}: {error}); "
                "offline, the dataset must already be in the local Hugging Face cache"
            ) from error
    if not hasattr(loaded, "keys"):
        raise DataError(
            f"{where}: loaded a single {type(loaded).__name__}; expected a DatasetDict with "
            "train and validation splits"
        )
    return loaded, where


def _splits(loaded: Any, cfg: Mapping[str, Any], where: str) -> dict[str, Any]:
    """{side: split} of the configured split names, each checked for the configured columns."""
    splits = {}
    for side in SIDES:
        split_name = option(cfg, f"{side}_split_name")
        if split_name not in loaded:
            raise DataError(
                f"{where}: split {split_name!r} (data.{side}_split_name) is missing; "
                f"splits are {sorted(loaded.keys())}"
            )
        split = loaded[split_name]
        for key in ("image_column", "label_column", "caption_column"):
            column = option(cfg, key)
            if column is not None and column not in split.column_names:
                raise DataError(
                    f"{where}: split {split_name!r} has no column {column!r} (data.{key}); "
                    f"columns are {split.column_names}"
                )
        splits[side] = split
    return splits


def _labels(
    splits: Mapping[str, Any], label_column: str, where: str
) -> tuple[dict[str, np.ndarray], list[str]]:
    """({side: integer labels}, class names): a ClassLabel's names, else 0..max for integer
    labels, else the sorted distinct values."""
    feature = splits["train"].features[label_column]
    raw = {
        side: np.asarray(split.with_format("numpy")[label_column]) for side, split in splits.items()
    }
    if hasattr(feature, "names") and hasattr(feature, "str2int"):
        labels = {side: int_labels(values, f"{where}:{side}") for side, values in raw.items()}
        return labels, [str(n) for n in feature.names]
    if all(np.issubdtype(values.dtype, np.integer) for values in raw.values()):
        labels = {side: int_labels(values, f"{where}:{side}") for side, values in raw.items()}
        return labels, integer_class_names(list(labels.values()))
    class_names = sorted({str(v) for values in raw.values() for v in values.tolist()})
    index = {n: label for label, n in enumerate(class_names)}
    labels = {
        side: np.array([index[str(v)] for v in values.tolist()], dtype=np.int64)
        for side, values in raw.items()
    }
    return labels, class_names


def _pool(split: Any, labels: np.ndarray, cfg: Mapping[str, Any], where: str) -> ImagePool:
    image_column = option(cfg, "image_column")
    caption_column = option(cfg, "caption_column")
    images_only = split.select_columns([image_column])

    def load_many(rows: np.ndarray) -> list[np.ndarray]:
        batch = images_only[[int(r) for r in rows]][image_column]
        return [
            to_uint8_hwc(image, f"{where}[{int(r)}]") for image, r in zip(batch, rows, strict=True)
        ]

    captions = None
    if caption_column is not None:
        captions = [str(c) for c in split[caption_column]]
    n = len(split)
    return ImagePool(
        images=LazyImages(load_many, np.arange(n)),
        labels=labels,
        ids=np.arange(n),
        captions=captions,
    )


@register_source(
    "huggingface",
    keys=(
        "name",
        "path",
        "image_column",
        "label_column",
        "caption_column",
        "train_split_name",
        "val_split_name",
    ),
)
def load_huggingface(cfg: Mapping[str, Any]) -> SourcePools:
    """The ``train_split_name`` / ``val_split_name`` splits of a hub dataset (``name``, from the
    local cache) or of a DatasetDict saved with ``save_to_disk`` (``path``)."""
    loaded, where = _open(cfg)
    splits = _splits(loaded, cfg, where)
    labels, class_names = _labels(splits, option(cfg, "label_column"), where)
    train, val = (_pool(splits[side], labels[side], cfg, f"{where}:{side}") for side in SIDES)
    return SourcePools(train=train, val=val, class_names=class_names)
