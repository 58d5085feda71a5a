"""Training subsets: LDS / retrain pools of random alpha-subsets, masks and removal sets.

Subset ``k`` of a pool is a pure function of ``(pool_seed, k, alpha, labels)``: its random stream
is ``SeedSequence([pool_seed, k])``, so drawing more subsets never changes earlier ones. Subsets
are stored as sorted row positions into the train split.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from diffattr.errors import ConfigError, CorruptFileError, DataError
from diffattr.store import h5_writer, open_h5

SUBSET_ATTRS = ("pool", "k", "alpha", "pool_seed", "n_train")


def _non_negative_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ConfigError(f"{name} = {value!r}; expected a non-negative integer")
    return int(value)


def _alpha(value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not math.isfinite(float(value))
        or not 0 < float(value) < 1
    ):
        raise ConfigError(f"alpha = {value!r}; expected a fraction strictly between 0 and 1")
    return float(value)


def _labels(labels: Any) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"labels have dtype {labels.dtype} and shape {labels.shape}; "
            "expected a 1-D integer array (the train split's labels)"
        )
    return labels.astype(np.int64)


def subset_size(n: int, alpha: float) -> int:
    """round(alpha * n), with halves rounded up."""
    return int(math.floor(alpha * n + 0.5))


def _class_quotas(counts: np.ndarray, alpha: float, total: int) -> np.ndarray:
    """Rows per class: floor(alpha * n_c), plus one for the classes with the largest remainders
    (ties broken by class order) until the quotas add up to ``total``."""
    exact = alpha * counts.astype(np.float64)
    quota = np.minimum(np.floor(exact).astype(np.int64), counts)
    extra = total - int(quota.sum())
    eligible = np.flatnonzero(quota < counts)
    order = eligible[np.argsort(-(exact - quota)[eligible], kind="stable")]
    if extra < 0 or extra > len(order):
        raise DataError(
            f"cannot split a subset of {total} rows over classes of sizes {counts.tolist()} "
            f"with alpha={alpha}"
        )
    quota[order[:extra]] += 1
    return quota


def draw_subset(
    labels: np.ndarray, alpha: float, pool_seed: int, k: int, stratify: bool = True
) -> np.ndarray:
    """Sorted int64 positions (into the train split) of subset ``k`` of the pool ``pool_seed``.

    The subset holds round(alpha * N) rows; stratified subsets take about alpha of every class
    (floor(alpha * n_c) plus the rounding remainders, distributed deterministically).
    """
    labels = _labels(labels)
    alpha = _alpha(alpha)
    pool_seed = _non_negative_int(pool_seed, "pool_seed")
    k = _non_negative_int(k, "subset index k")
    n = len(labels)
    total = subset_size(n, alpha)
    if not 0 < total < n:
        raise DataError(
            f"alpha = {alpha} of {n} training rows gives a subset of {total} rows; a subset must "
            f"be non-empty and smaller than the training set (1..{n - 1} rows)"
        )
    rng = np.random.default_rng(np.random.SeedSequence([pool_seed, k]))
    if not stratify:
        return np.sort(rng.permutation(n)[:total]).astype(np.int64)
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    quota = _class_quotas(counts, alpha, total)
    chosen = []
    for index in range(len(classes)):
        members = np.flatnonzero(inverse == index)
        chosen.append(members[rng.permutation(len(members))[: quota[index]]])
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def _positions(positions: Any, n_train: int, where: str) -> np.ndarray:
    positions = np.asarray(positions)
    if positions.ndim != 1 or not (
        np.issubdtype(positions.dtype, np.integer) or positions.size == 0
    ):
        raise DataError(
            f"{where}: positions have dtype {positions.dtype} and shape {positions.shape}; "
            "expected a 1-D integer array"
        )
    positions = positions.astype(np.int64)
    bad = positions[(positions < 0) | (positions >= n_train)]
    if bad.size:
        raise DataError(
            f"{where}: position {int(bad[0])} is outside the train split (valid 0..{n_train - 1})"
        )
    return positions


def write_subset(path: str | os.PathLike, positions: np.ndarray, attrs: Mapping[str, Any]) -> None:
    """Store one subset (sorted unique positions) with attrs pool, k, alpha, pool_seed, n_train."""
    missing = [key for key in SUBSET_ATTRS if key not in attrs]
    if missing:
        raise ConfigError(
            f"write_subset({str(path)!r}): attrs lack {missing}; required: {list(SUBSET_ATTRS)}"
        )
    n_train = _non_negative_int(attrs["n_train"], "n_train")
    positions = _positions(positions, n_train, f"subset file {path}")
    if positions.size > 1 and np.any(np.diff(positions) <= 0):
        raise DataError(f"subset file {path}: positions must be sorted and unique")
    with h5_writer(path, {"kind": "subset", **attrs, "size": int(positions.size)}) as handle:
        handle.create_dataset("positions", data=positions)


def read_subset(path: str | os.PathLike) -> np.ndarray:
    """The sorted int64 positions stored by :func:`write_subset`."""
    with open_h5(path) as handle:
        if "positions" not in handle:
            raise CorruptFileError(
                f"{path}: has no dataset 'positions' (found {sorted(handle)}); it is not a subset "
                "file. Delete it and rerun the rule that draws subsets."
            )
        return np.asarray(handle["positions"][()], dtype=np.int64)


def subset_mask(position_lists: Sequence[np.ndarray], n_train: int) -> np.ndarray:
    """Boolean membership matrix [S, N]: row s is True at the positions of subset s."""
    n_train = _non_negative_int(n_train, "n_train")
    mask = np.zeros((len(position_lists), n_train), dtype=bool)
    for row, positions in enumerate(position_lists):
        mask[row, _positions(positions, n_train, f"subset {row}")] = True
    return mask


def removal_subset(n_train: int, removed_positions: np.ndarray) -> np.ndarray:
    """Sorted positions of every training row except ``removed_positions``."""
    n_train = _non_negative_int(n_train, "n_train")
    removed = _positions(removed_positions, n_train, "removed positions")
    kept = np.setdiff1d(np.arange(n_train, dtype=np.int64), removed)
    if kept.size == 0:
        raise DataError(
            f"removing {np.unique(removed).size} positions leaves none of the {n_train} "
            "training rows"
        )
    return kept
