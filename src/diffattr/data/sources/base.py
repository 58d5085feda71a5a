"""What every data source shares: the pools it returns, its registration and its config keys.

A *pool* is every candidate row of one side (train or validation) after the class filter. Rows
keep their index in the original source (``ids``): the HF split index, the CSV row index, the npz
row, or the sklearn digits row. Pools are in original order.

Images of file- and hub-backed sources are loaded lazily (:class:`LazyImages`), so a pool of
tens of thousands of large images costs nothing until rows are actually taken.

A source is a function ``load(cfg) -> SourcePools`` registered with :func:`register_source`
under its ``data.source`` name, with the ``data.*`` keys it reads besides :data:`COMMON_KEYS`.
Defaults of every key are the schema's (:data:`DEFAULTS`, read from
``src/diffattr/schemas/config.schema.yaml``); ``tests/test_registries.py`` checks that the schema's
``data.source`` enum lists the registered sources and that its ``data`` keys are the common keys
plus the sources' keys.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from diffattr.data.preprocess import to_uint8_hwc
from diffattr.errors import ConfigError, DataError
from diffattr.schema import schema_defaults

#: Defaults of the ``data`` config block: the schema's (None where it has none).
DEFAULTS: dict[str, Any] = schema_defaults("data")

#: ``data.*`` keys that every source honours (read by ``load_source``, the splits and the
#: preprocessing), whatever the source.
COMMON_KEYS: tuple[str, ...] = (
    "source",
    "classes",
    "caption_template",
    "resolution",
    "channels",
    "center_crop",
    "train_size",
    "val_size",
    "split_seed",
    "stratify",
)


def option(cfg: Mapping[str, Any], key: str) -> Any:
    """Value of ``data.<key>``; a missing key or null gets the default from :data:`DEFAULTS`."""
    value = cfg.get(key)
    return DEFAULTS.get(key) if value is None else value


# --------------------------------------------------------------------------------------------
# pools


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
# registry

Loader = Callable[[Mapping[str, Any]], SourcePools]


@dataclasses.dataclass(frozen=True)
class Source:
    """One registered data source."""

    name: str
    load: Loader
    #: the ``data.*`` keys it reads besides :data:`COMMON_KEYS`
    keys: tuple[str, ...]
    summary: str = ""


_REGISTRY: dict[str, Source] = {}


def register_source(name: str, *, keys: Sequence[str] = ()) -> Callable[[Loader], Loader]:
    """Decorator: make ``load(cfg) -> SourcePools`` selectable as ``data.source: <name>``.

    ``keys`` are the ``data.*`` keys the source reads besides :data:`COMMON_KEYS` (their
    defaults are the schema's, through :func:`option`)."""

    def decorate(load: Loader) -> Loader:
        if name in _REGISTRY:
            raise ConfigError(f"data source {name!r} is registered twice")
        summary = " ".join((load.__doc__ or "").strip().split("\n\n", 1)[0].split())
        _REGISTRY[name] = Source(name, load, tuple(keys), summary)
        return load

    return decorate


def source_names() -> tuple[str, ...]:
    """The registered source names, in registration order."""
    return tuple(_REGISTRY)


def get_source(name: Any) -> Source:
    """The source registered as ``name``; ConfigError naming the valid ones otherwise."""
    source = _REGISTRY.get(name) if isinstance(name, str) else None
    if source is None:
        raise ConfigError(
            f"data.source = {name!r} is not a known source; valid: {list(source_names())}"
        )
    return source


# --------------------------------------------------------------------------------------------
# helpers shared by the sources


def fraction(cfg: Mapping[str, Any]) -> float:
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

    val_fraction = fraction(cfg)
    stratify = bool(option(cfg, "stratify"))
    rows = np.arange(len(labels))
    try:
        train, val = train_test_split(
            rows,
            test_size=val_fraction,
            random_state=split_seed(cfg),
            stratify=labels if stratify else None,
        )
    except ValueError as error:
        raise DataError(
            f"{where}: cannot split {len(labels)} rows into train/val pools with "
            f"val_pool_fraction={val_fraction} (stratify={stratify}): {error}"
        ) from error
    return np.sort(train).astype(np.int64), np.sort(val).astype(np.int64)


def require(cfg: Mapping[str, Any], key: str, source: str) -> Any:
    value = option(cfg, key)
    if value is None:
        raise ConfigError(f"data.{key} is required for source {source!r} but is null/missing")
    return value


def int_labels(values: np.ndarray, where: str) -> np.ndarray:
    values = np.asarray(values)
    if values.ndim != 1 or not (np.issubdtype(values.dtype, np.integer) or values.size == 0):
        raise DataError(
            f"{where}: labels have dtype {values.dtype} and shape {values.shape}; "
            "expected a 1-D integer array"
        )
    if values.size and values.min() < 0:
        raise DataError(f"{where}: labels contain negative value {values.min()}; expected >= 0")
    return values.astype(np.int64)


def integer_class_names(labels: Sequence[np.ndarray]) -> list[str]:
    """``["0", ..., "max label"]`` for integer labels without names."""
    max_label = max([int(v.max()) for v in labels if v.size] or [-1])
    return [str(label) for label in range(max_label + 1)]
