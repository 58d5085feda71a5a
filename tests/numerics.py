"""Tolerances for float32 results compared with a reference."""

from __future__ import annotations

import numpy as np


def assert_close_at_row_scale(actual, desired, rtol: float = 1e-5) -> None:
    """Each row of ``actual`` equals ``desired`` within ``rtol`` of that row's largest entry.

    A float32 feature is a sum of many gradient terms, and its rounding error is of the size of
    those terms, not of the result: an entry near zero carries the error of its row. How the sum
    is ordered depends on the CPU's kernels (an EPYC and a Xeon differ in the 6th digit), so an
    absolute tolerance must follow the row's scale. A wrong feature is off by the scale itself."""
    actual, desired = np.asarray(actual), np.asarray(desired)
    assert actual.shape == desired.shape, (actual.shape, desired.shape)
    scale = np.abs(desired).max(axis=-1, keepdims=True)
    assert np.all(np.abs(actual - desired) <= rtol * (np.abs(desired) + scale)), (
        f"max |difference| / row scale = {np.max(np.abs(actual - desired) / scale):.3g} "
        f"> rtol {rtol}"
    )
