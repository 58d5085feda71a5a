"""The subsampled randomized Hadamard transform against explicit matrices (float64)."""

import numpy as np
import pytest
import scipy.linalg
import torch

from diffattr.counter_rng import counter_matrix_reference, matrix_key
from diffattr.hadamard import SubsampledHadamard, fwht, next_power_of_two


@pytest.mark.parametrize("n", [1, 2, 8, 256])
def test_fwht_is_the_orthonormal_sylvester_matrix(n):
    x = torch.randn(5, 3, n, dtype=torch.float64, generator=torch.Generator().manual_seed(n))
    expected = x.numpy() @ scipy.linalg.hadamard(n).T / np.sqrt(n)
    np.testing.assert_allclose(fwht(x).numpy(), expected, rtol=1e-12, atol=1e-12)


def test_fwht_refuses_a_width_that_is_not_a_power_of_two():
    with pytest.raises(ValueError, match="power-of-two width, got 12"):
        fwht(torch.zeros(2, 12))


@pytest.mark.parametrize("in_dim, out_dim", [(48, 10), (64, 64), (100, 7)])
def test_srht_is_its_documented_formula(in_dim, out_dim):
    """√(N₂/N)·(H D)[S] with D, S drawn from the slow NumPy counter generator."""
    key = matrix_key(3, "test", in_dim, out_dim)
    srht = SubsampledHadamard(key, in_dim, out_dim)
    padded = next_power_of_two(in_dim)
    signs = counter_matrix_reference(key, 1, in_dim, "rademacher")[0]
    order = counter_matrix_reference(key ^ 1, 1, padded, "normal")[0]
    chosen = np.argsort(order, kind="stable")[:out_dim]
    hadamard = scipy.linalg.hadamard(padded)[:in_dim] / np.sqrt(padded)
    expected = np.sqrt(padded / in_dim) * (signs[:, None] * hadamard)[:, chosen]
    np.testing.assert_allclose(srht.matrix().numpy(), expected, rtol=1e-12, atol=1e-12)
    x = torch.randn(130, in_dim, dtype=torch.float64)  # more rows than one chunk
    np.testing.assert_allclose(srht.apply(x).numpy(), x.numpy() @ expected, atol=1e-12)


def test_srht_keeps_the_dense_maps_kernel_scale_and_concentrates_like_it():
    """E‖y‖² = (Z/N)‖x‖² (a dense N(0, 1/N) map's), and the spread over seeds of a fixed
    vector's ‖y‖² is that of a Gaussian map's (relative std √(2/Z)), within 25 %."""
    in_dim, out_dim = 1000, 64
    x = torch.randn(in_dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x[:10] *= 30  # a few large coordinates: the case a sampling sketch without H would miss
    ratios = np.array(
        [
            float(SubsampledHadamard(seed, in_dim, out_dim).apply(x).square().sum())
            / (out_dim / in_dim * float(x.square().sum()))
            for seed in range(400)
        ]
    )
    assert abs(ratios.mean() - 1) < 0.03
    assert abs(ratios.std() / np.sqrt(2 / out_dim) - 1) < 0.25


def test_srht_refuses_more_outputs_than_its_padded_width():
    with pytest.raises(ValueError, match="gives 1 to 64, not 65"):
        SubsampledHadamard(0, 48, 65)
