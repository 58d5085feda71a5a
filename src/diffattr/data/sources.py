"""Dataset sources: load the train and validation pools of a dataset, before any splitting.

A *pool* is every candidate row of one side (train or validation) after the class filter. Rows
keep their index in the original source (``ids``): the HF split index, the CSV row index, the npz
row, or the sklearn digits row. Pools are in original order.

Images of file- and hub-backed sources are loaded lazily (:class:`LazyImages`), so a pool of
tens of thousands of large images costs nothing until rows are actually taken.
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from diffattr.data.preprocess import to_uint8_hwc
from diffattr.errors import ConfigError, DataError

SOURCES = ("digits", "imagefolder", "npz", "huggingface")

#: Defaults of the ``data`` config block (the JSON schema applies the same ones).
DEFAULTS: dict[str, Any] = {
    "source": None,
    "path": None,
    "csv": None,
    "name": None,
    "image_column": "img",
    "label_column": "label",
    "caption_column": None,
    "path_column": "path",
    "train_split_name": "train",
    "val_split_name": "test",
    "classes": None,
    "resolution": 16,
    "channels": 1,
    "center_crop": None,
    "train_size": None,
    "val_size": None,
    "val_pool_fraction": 0.25,
    "split_seed": 42,
    "stratify": True,
    "caption_template": None,
}

#: Column of an image-folder CSV that assigns rows to the train / validation pools.
SPLIT_COLUMN = "split"


def option(cfg: Mapping[str, Any], key: str) -> Any:
    """Value of ``data.<key>``; a missing key or null gets the default from :data:`DEFAULTS`."""
    value = cfg.get(key)
    return DEFAULTS.get(key) if value is None else value


class LazyImages(Sequence):
    """A read-only sequence of uint8 HxWxC images loaded on access.

    ``load_many(rows)`` loads the images of the given source rows; ``rows`` maps positions of
    this sequence to source rows, so taking a subset never loads anything.
    """

    def __init__(self, load_many: Callable[[np.ndarray], list[np.ndarray]], rows: Any) -> None:
        self._load_many = load_many
        self.rows = np.asarray(rows, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return self.take(np.arange(len(self))[index])
        return self.load([index])[0]

    def take(self, positions: Any) -> LazyImages:
        return LazyImages(self._load_many, self.rows[np.asarray(positions, dtype=np.int64)])

    def load(self, positions: Any) -> list[np.ndarray]:
        """Load the images at ``positions`` (one batched call to the source)."""
        rows = self.rows[np.asarray(positions, dtype=np.int64)]
        return self._load_many(rows) if len(rows) else []


def take_images(images: Any, positions: np.ndarray) -> Any:
    """The images at ``positions`` of a list, an array [n, H, W, C] or :class:`LazyImages`."""
    if isinstance(images, LazyImages):
        return images.take(positions)
    if isinstance(images, np.ndarray):
        return images[positions]
    return [images[int(p)] for p in positions]


def load_images(images: Any, positions: np.ndarray) -> list[np.ndarray]:
    """Materialise the images at ``positions`` as uint8 HxWxC arrays."""
    if isinstance(images, LazyImages):
        return images.load(positions)
    return [to_uint8_hwc(images[int(p)], f"image {int(p)}") for p in positions]


@dataclasses.dataclass(frozen=True)
class ImagePool:
    """Candidate rows of one side of a dataset, in original order.

    ``source_labels`` are the labels before the class filter remapped them (the filter sets them);
    splits stratify on them so draws match the reference, which stratifies on raw labels.
    """

    images: Any
    labels: np.ndarray
    ids: np.ndarray
    captions: list[str] | None = None
    paths: list[str] | None = None
    source_labels: np.ndarray | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", np.asarray(self.labels, dtype=np.int64))
        object.__setattr__(self, "ids", np.asarray(self.ids, dtype=np.int64))
        if self.source_labels is not None:
            object.__setattr__(
                self, "source_labels", np.asarray(self.source_labels, dtype=np.int64)
            )
        n = len(self.labels)
        lengths = {"images": len(self.images), "ids": len(self.ids)}
        for name in ("captions", "paths", "source_labels"):
            if getattr(self, name) is not None:
                lengths[name] = len(getattr(self, name))
        bad = {name: length for name, length in lengths.items() if length != n}
        if bad:
            raise DataError(f"image pool has {n} labels but lengths {bad}; all must be equal")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def stratify_labels(self) -> np.ndarray:
        return self.labels if self.source_labels is None else self.source_labels

    def take(self, positions: Any) -> ImagePool:
        """The rows at ``positions`` (in that order)."""
        positions = np.asarray(positions, dtype=np.int64)
        return ImagePool(
            images=take_images(self.images, positions),
            labels=self.labels[positions],
            ids=self.ids[positions],
            captions=None if self.captions is None else [self.captions[p] for p in positions],
            paths=None if self.paths is None else [self.paths[p] for p in positions],
            source_labels=None if self.source_labels is None else self.source_labels[positions],
        )


@dataclasses.dataclass(frozen=True)
class SourcePools:
    """The train and validation pools of a source, and the class names of their labels."""

    train: ImagePool
    val: ImagePool
    class_names: list[str]


# --------------------------------------------------------------------------------------------
# public entry points


def load_source(cfg: Mapping[str, Any]) -> SourcePools:
    """Load the pools described by the ``data`` config block, class-filtered and captioned."""
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"data config must be a mapping, got {type(cfg).__name__}: {cfg!r}")
    source = cfg.get("source")
    loader = _LOADERS.get(source) if isinstance(source, str) else None
    if loader is None:
        raise ConfigError(f"data.source = {source!r} is not a known source; valid: {list(SOURCES)}")
    pools = loader(cfg)
    pools = filter_classes(pools, option(cfg, "classes"))
    template = option(cfg, "caption_template")
    if template is not None:
        pools = _apply_caption_template(pools, template)
    return pools


def filter_classes(pools: SourcePools, classes: Sequence[Any] | None) -> SourcePools:
    """Keep the rows of ``classes`` (names or integer labels) and remap labels to 0..C-1.

    Labels follow the order of ``classes``; ``class_names`` follow too. ``None`` keeps every class.
    """
    if classes is None:
        return SourcePools(
            train=dataclasses.replace(pools.train, source_labels=pools.train.stratify_labels),
            val=dataclasses.replace(pools.val, source_labels=pools.val.stratify_labels),
            class_names=list(pools.class_names),
        )
    names = list(pools.class_names)
    if isinstance(classes, (str, bytes)) or not isinstance(classes, Sequence) or not classes:
        raise ConfigError(
            f"data.classes = {classes!r}; expected null or a non-empty list of class names or "
            f"integer labels from {names}"
        )
    selected: list[int] = []
    for item in classes:
        if isinstance(item, str):
            if item not in names:
                raise DataError(
                    f"data.classes: class name {item!r} is not in the dataset; "
                    f"available class names: {names}"
                )
            label = names.index(item)
        elif isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            if not 0 <= item < len(names):
                raise DataError(
                    f"data.classes: integer label {item!r} is out of range 0..{len(names) - 1}; "
                    f"available class names: {names}"
                )
            label = int(item)
        else:
            raise ConfigError(
                f"data.classes: entry {item!r} is neither a class name nor an integer label; "
                f"available class names: {names}"
            )
        if label in selected:
            raise ConfigError(
                f"data.classes = {list(classes)!r} names class {names[label]!r} twice"
            )
        selected.append(label)
    remap = {old: new for new, old in enumerate(selected)}
    empty = [names[label] for label in selected if not np.any(pools.train.labels == label)]
    if empty:
        raise DataError(
            f"data.classes = {list(classes)!r}: classes {empty} have no rows in the train pool, "
            f"so the filter matches nothing for them; available class names: {names} "
            f"(train pool label counts: {_counts(pools.train.labels, names)})"
        )
    return SourcePools(
        train=_filter_pool(pools.train, selected, remap),
        val=_filter_pool(pools.val, selected, remap),
        class_names=[names[label] for label in selected],
    )


# --------------------------------------------------------------------------------------------
# helpers shared by the sources


def _counts(labels: np.ndarray, names: list[str]) -> dict[str, int]:
    values, counts = np.unique(labels, return_counts=True)
    return {
        names[v] if 0 <= v < len(names) else str(v): int(c)
        for v, c in zip(values, counts, strict=True)
    }


def _filter_pool(pool: ImagePool, selected: list[int], remap: dict[int, int]) -> ImagePool:
    positions = np.flatnonzero(np.isin(pool.labels, selected))
    kept = pool.take(positions)
    return dataclasses.replace(
        kept,
        labels=np.array([remap[int(label)] for label in kept.labels], dtype=np.int64),
        source_labels=kept.stratify_labels,
    )


def _apply_caption_template(pools: SourcePools, template: Any) -> SourcePools:
    if not isinstance(template, str):
        raise ConfigError(
            f"data.caption_template = {template!r}; expected a string such as 'a {{label}} painting'"
        )
    texts = {}
    for label, name in enumerate(pools.class_names):
        try:
            texts[label] = template.format(label=name.replace("_", " ").lower())
        except (KeyError, IndexError, ValueError) as error:
            raise ConfigError(
                f"data.caption_template = {template!r} cannot be filled ({error!r}); "
                "the only placeholder allowed is {label}"
            ) from error

    def caption(pool: ImagePool) -> ImagePool:
        if pool.captions is not None:
            return pool
        return dataclasses.replace(pool, captions=[texts[int(label)] for label in pool.labels])

    return dataclasses.replace(pools, train=caption(pools.train), val=caption(pools.val))


def _fraction(cfg: Mapping[str, Any]) -> float:
    value = option(cfg, "val_pool_fraction")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ConfigError(
            f"data.val_pool_fraction = {value!r}; expected a number strictly between 0 and 1"
        )
    return float(value)


def split_seed(cfg: Mapping[str, Any]) -> int:
    value = option(cfg, "split_seed")
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or not 0 <= value < 2**32
    ):
        raise ConfigError(f"data.split_seed = {value!r}; expected an integer in [0, 2**32)")
    return int(value)


def split_pool(
    labels: np.ndarray, cfg: Mapping[str, Any], where: str
) -> tuple[np.ndarray, np.ndarray]:
    """Split rows without an official split into sorted (train pool, val pool) row indices."""
    from sklearn.model_selection import train_test_split

    fraction = _fraction(cfg)
    stratify = bool(option(cfg, "stratify"))
    rows = np.arange(len(labels))
    try:
        train, val = train_test_split(
            rows,
            test_size=fraction,
            random_state=split_seed(cfg),
            stratify=labels if stratify else None,
        )
    except ValueError as error:
        raise DataError(
            f"{where}: cannot split {len(labels)} rows into train/val pools with "
            f"val_pool_fraction={fraction} (stratify={stratify}): {error}"
        ) from error
    return np.sort(train).astype(np.int64), np.sort(val).astype(np.int64)


def _require(cfg: Mapping[str, Any], key: str, source: str) -> Any:
    value = option(cfg, key)
    if value is None:
        raise ConfigError(f"data.{key} is required for source {source!r} but is null/missing")
    return value


def _int_labels(values: np.ndarray, where: str) -> np.ndarray:
    values = np.asarray(values)
    if values.ndim != 1 or not (np.issubdtype(values.dtype, np.integer) or values.size == 0):
        raise DataError(
            f"{where}: labels have dtype {values.dtype} and shape {values.shape}; "
            "expected a 1-D integer array"
        )
    if values.size and values.min() < 0:
        raise DataError(f"{where}: labels contain negative value {values.min()}; expected >= 0")
    return values.astype(np.int64)


# --------------------------------------------------------------------------------------------
# sources


def _load_digits(cfg: Mapping[str, Any]) -> SourcePools:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(np.asarray(digits.images) * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    images = images[..., None]
    labels = np.asarray(digits.target, dtype=np.int64)
    train, val = split_pool(labels, cfg, "digits")

    def pool(rows: np.ndarray) -> ImagePool:
        return ImagePool(images=images[rows], labels=labels[rows], ids=rows)

    return SourcePools(train=pool(train), val=pool(val), class_names=[str(d) for d in range(10)])


def _open_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            image.load()
            return to_uint8_hwc(image, str(path))
    except FileNotFoundError as error:
        raise DataError(f"image file {path} does not exist (listed in the data CSV)") from error
    except OSError as error:
        raise DataError(f"image file {path} cannot be read as an image: {error}") from error


def _load_imagefolder(cfg: Mapping[str, Any]) -> SourcePools:
    root = Path(_require(cfg, "path", "imagefolder"))
    csv_path = Path(_require(cfg, "csv", "imagefolder"))
    if not root.is_dir():
        raise DataError(f"data.path = {str(root)!r}: image root directory does not exist")
    if not csv_path.is_file():
        raise DataError(f"data.csv = {str(csv_path)!r}: CSV file does not exist")
    with open(csv_path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = list(reader.fieldnames or [])
        rows = list(reader)
    where = f"data.csv {str(csv_path)!r}"
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
    if not rows:
        raise DataError(f"{where}: CSV has a header but no rows")
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

    if SPLIT_COLUMN in columns:
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
        train, val = chosen["train"], chosen["val"]
    else:
        train, val = split_pool(labels, cfg, where)

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


def _load_npz(cfg: Mapping[str, Any]) -> SourcePools:
    path = Path(_require(cfg, "path", "npz"))
    if not path.is_file():
        raise DataError(f"data.path = {str(path)!r}: npz file does not exist")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise DataError(f"data.path = {str(path)!r}: not a readable .npz file ({error})") from error
    with archive:
        keys = set(archive.files)
        two = {"train_images", "train_labels", "val_images", "val_labels"}
        one = {"images", "labels"}
        if two <= keys:
            arrays = {key: archive[key] for key in two}
            layout = "two"
        elif one <= keys:
            arrays = {key: archive[key] for key in one}
            layout = "one"
        else:
            raise DataError(
                f"{path}: npz holds arrays {sorted(keys)}; expected either {sorted(two)} or "
                f"{sorted(one)} (plus optional 'class_names')"
            )
        names_array = archive["class_names"] if "class_names" in keys else None

    def checked(prefix: str) -> tuple[np.ndarray, np.ndarray]:
        images = _npz_images(arrays[f"{prefix}images"], f"{path}:{prefix}images")
        labels = _int_labels(arrays[f"{prefix}labels"], f"{path}:{prefix}labels")
        if len(images) != len(labels):
            raise DataError(
                f"{path}: {prefix}images has {len(images)} rows but {prefix}labels has "
                f"{len(labels)}; they must match"
            )
        return images, labels

    if layout == "two":
        train_images, train_labels = checked("train_")
        val_images, val_labels = checked("val_")
        train = ImagePool(train_images, train_labels, np.arange(len(train_labels)))
        val = ImagePool(val_images, val_labels, np.arange(len(val_labels)))
    else:
        images, labels = checked("")
        train_rows, val_rows = split_pool(labels, cfg, str(path))
        train = ImagePool(images[train_rows], labels[train_rows], train_rows)
        val = ImagePool(images[val_rows], labels[val_rows], val_rows)

    max_label = max([int(p.labels.max()) for p in (train, val) if len(p)] or [-1])
    if names_array is not None:
        class_names = [str(name) for name in np.asarray(names_array).tolist()]
        if max_label >= len(class_names):
            raise DataError(
                f"{path}: label {max_label} has no entry in class_names {class_names} "
                f"(labels must be < {len(class_names)})"
            )
    else:
        class_names = [str(label) for label in range(max_label + 1)]
    return SourcePools(train=train, val=val, class_names=class_names)


def _import_datasets() -> Any:
    try:
        import datasets
    except ImportError as error:
        raise ImportError(
            "data.source 'huggingface' needs the `datasets` package: pip install datasets "
            "(or pip install 'diffattr[hub]')"
        ) from error
    return datasets


def _load_huggingface(cfg: Mapping[str, Any]) -> SourcePools:
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
    image_column = option(cfg, "image_column")
    label_column = option(cfg, "label_column")
    caption_column = option(cfg, "caption_column")
    splits = {}
    for side in ("train", "val"):
        split_name = option(cfg, f"{side}_split_name")
        if split_name not in loaded:
            raise DataError(
                f"{where}: split {split_name!r} (data.{side}_split_name) is missing; "
                f"splits are {sorted(loaded.keys())}"
            )
        split = loaded[split_name]
        for key, column in (
            ("image_column", image_column),
            ("label_column", label_column),
            ("caption_column", caption_column),
        ):
            if column is not None and column not in split.column_names:
                raise DataError(
                    f"{where}: split {split_name!r} has no column {column!r} (data.{key}); "
                    f"columns are {split.column_names}"
                )
        splits[side] = split

    feature = splits["train"].features[label_column]
    raw = {
        side: np.asarray(split.with_format("numpy")[label_column]) for side, split in splits.items()
    }
    if hasattr(feature, "names") and hasattr(feature, "str2int"):
        class_names = [str(n) for n in feature.names]
        labels = {side: _int_labels(values, f"{where}:{side}") for side, values in raw.items()}
    elif all(np.issubdtype(values.dtype, np.integer) for values in raw.values()):
        labels = {side: _int_labels(values, f"{where}:{side}") for side, values in raw.items()}
        max_label = max([int(v.max()) for v in labels.values() if v.size] or [-1])
        class_names = [str(label) for label in range(max_label + 1)]
    else:
        class_names = sorted({str(v) for values in raw.values() for v in values.tolist()})
        index = {n: label for label, n in enumerate(class_names)}
        labels = {
            side: np.array([index[str(v)] for v in values.tolist()], dtype=np.int64)
            for side, values in raw.items()
        }

    def pool(side: str) -> ImagePool:
        split = splits[side]
        images_only = split.select_columns([image_column])

        def load_many(rows: np.ndarray) -> list[np.ndarray]:
            batch = images_only[[int(r) for r in rows]][image_column]
            return [
                to_uint8_hwc(image, f"{where}:{side}[{int(r)}]")
                for image, r in zip(batch, rows, strict=True)
            ]

        captions = None
        if caption_column is not None:
            captions = [str(c) for c in split[caption_column]]
        n = len(split)
        return ImagePool(
            images=LazyImages(load_many, np.arange(n)),
            labels=labels[side],
            ids=np.arange(n),
            captions=captions,
        )

    return SourcePools(train=pool("train"), val=pool("val"), class_names=class_names)


_LOADERS: dict[str, Callable[[Mapping[str, Any]], SourcePools]] = {
    "digits": _load_digits,
    "imagefolder": _load_imagefolder,
    "npz": _load_npz,
    "huggingface": _load_huggingface,
}
