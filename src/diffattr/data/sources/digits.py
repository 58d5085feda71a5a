"""``data.source: digits``: scikit-learn's 8x8 handwritten digits (1797 rows, no official split)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from diffattr.data.sources.base import ImagePool, SourcePools, register_source, split_pool


@register_source("digits", keys=("val_pool_fraction",))
def load_digits(cfg: Mapping[str, Any]) -> SourcePools:
    """scikit-learn's digits, split into train / val pools by ``val_pool_fraction``."""
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    images = np.round(np.asarray(digits.images) * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    images = images[..., None]
    labels = np.asarray(digits.target, dtype=np.int64)
    train, val = split_pool(labels, cfg, "digits")

    def pool(rows: np.ndarray) -> ImagePool:
        return ImagePool(images=images[rows], labels=labels[rows], ids=rows)

    return SourcePools(train=pool(train), val=pool(val), class_names=[str(d) for d in range(10)])
