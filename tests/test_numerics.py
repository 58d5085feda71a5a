"""The float32 tolerance helper rejects a wrong entry and accepts rounding at the row's scale."""

import numpy as np
import pytest

from tests.numerics import assert_close_at_row_scale


def test_row_scale_tolerance_accepts_rounding_and_rejects_an_error():
    rng = np.random.default_rng(0)
    desired = rng.normal(size=(3, 50)).astype(np.float32)
    desired[1, 7] = 1e-3  # an entry near zero carries its row's rounding error
    rounded = desired.copy()
    rounded[1, 7] += 2e-6 * np.abs(desired[1]).max()
    assert_close_at_row_scale(rounded, desired, rtol=1e-5)
    wrong = desired.copy()
    wrong[2, 3] += 1e-3 * np.abs(desired[2]).max()
    with pytest.raises(AssertionError, match="row scale"):
        assert_close_at_row_scale(wrong, desired, rtol=1e-5)
