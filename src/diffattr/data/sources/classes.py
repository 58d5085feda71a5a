"""What ``load_source`` applies to every source's pools: the class filter and caption templates."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from diffattr.data.sources.base import ImagePool, SourcePools
from diffattr.errors import ConfigError, DataError


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


def apply_caption_template(pools: SourcePools, template: Any) -> SourcePools:
    """Caption every row without a caption from its class name (``data.caption_template``)."""
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
