"""Dataset sources: load the train and validation pools of a dataset, before any splitting.

Each source is one module that registers its loader (see :mod:`diffattr.data.sources.base`):

=============== ==================================================================
source          reads
=============== ==================================================================
digits          scikit-learn's 8x8 digits (no official split)
imagefolder     image files under ``path`` listed by the CSV ``csv``
npz             image and label arrays in one ``.npz`` file
huggingface     a ``datasets`` DatasetDict from the hub cache (``name``) or disk (``path``)
=============== ==================================================================

Adding a source is one module with a ``@register_source("name", keys=(...))`` loader, imported
below, plus ``name`` in the ``data.source`` enum of ``src/diffattr/schemas/config.schema.yaml``
(and any new key in the schema's ``data`` block); ``tests/test_registries.py`` checks both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# The import order is the registration order, which messages list.
# isort: off
from diffattr.data.sources import digits, imagefolder, npz, huggingface  # noqa: F401

# isort: on
from diffattr.data.sources.base import (
    COMMON_KEYS,
    DEFAULTS,
    ImagePool,
    LazyImages,
    Source,
    SourcePools,
    get_source,
    load_images,
    option,
    register_source,
    source_names,
    split_pool,
    split_seed,
    take_images,
)
from diffattr.data.sources.classes import apply_caption_template, filter_classes
from diffattr.errors import ConfigError

#: The registered source names (the schema's ``data.source`` enum).
SOURCES: tuple[str, ...] = source_names()


def load_source(cfg: Mapping[str, Any]) -> SourcePools:
    """Load the pools described by the ``data`` config block, class-filtered and captioned."""
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"data config must be a mapping, got {type(cfg).__name__}: {cfg!r}")
    pools = get_source(cfg.get("source")).load(cfg)
    pools = filter_classes(pools, option(cfg, "classes"))
    template = option(cfg, "caption_template")
    if template is not None:
        pools = apply_caption_template(pools, template)
    return pools


__all__ = [
    "COMMON_KEYS",
    "DEFAULTS",
    "SOURCES",
    "ImagePool",
    "LazyImages",
    "Source",
    "SourcePools",
    "filter_classes",
    "get_source",
    "load_images",
    "load_source",
    "option",
    "register_source",
    "source_names",
    "split_pool",
    "split_seed",
    "take_images",
]
