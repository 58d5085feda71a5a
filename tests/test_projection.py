"""Seeded block projections: reproducible, seed-dependent, correctly distributed, cache-neutral."""

import pytest
import torch

from diffattr.errors import ConfigError
from diffattr.projection import block_seed, make_projector


def _grads(n=5, p=300, seed=0):
    return torch.randn(n, p, generator=torch.Generator().manual_seed(seed))


def test_same_seed_same_projection_different_seed_differs():
    grads = _grads()
    a = make_projector("normal", 300, 32, seed=42, block_size=64).project(grads)
    b = make_projector("normal", 300, 32, seed=42, block_size=64).project(grads)
    c = make_projector("normal", 300, 32, seed=43, block_size=64).project(grads)
    assert a.dtype == torch.float32 and a.shape == (5, 32)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_projection_is_grads_times_matrix_and_rowwise():
    grads = _grads()
    proj = make_projector("normal", 300, 32, seed=1, block_size=128)  # last block is partial
    matrix = proj.matrix()
    assert matrix.shape == (300, 32)
    out = proj.project(grads)
    torch.testing.assert_close(out, grads @ matrix, rtol=1e-5, atol=1e-4)
    rows = torch.cat([proj.project(grads[i : i + 1]) for i in range(5)])
    torch.testing.assert_close(out, rows, rtol=1e-6, atol=1e-5)


def test_normal_entries_are_standard_normal():
    matrix = make_projector("normal", 512, 256, seed=42, block_size=100).matrix()
    assert abs(matrix.mean().item()) < 0.01
    assert abs(matrix.var().item() - 1.0) < 0.02


def test_rademacher_entries_are_signs():
    matrix = make_projector("rademacher", 200, 64, seed=3, block_size=50).matrix()
    assert set(matrix.unique().tolist()) == {-1.0, 1.0}
    assert abs(matrix.mean().item()) < 0.03


def test_cache_and_regeneration_agree():
    grads = _grads()
    cached = make_projector("normal", 300, 32, seed=7, block_size=64)
    uncached = make_projector("normal", 300, 32, seed=7, block_size=64, max_cache_bytes=0)
    assert cached.caches and not uncached.caches
    first = cached.project(grads)
    assert torch.equal(first, cached.project(grads))
    assert torch.equal(first, uncached.project(grads))


def test_identity_returns_input():
    grads = _grads(p=20).double()
    out = make_projector("identity", 20, 20, seed=0).project(grads)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, grads.float())


def test_describe_and_block_seed():
    proj = make_projector("rademacher", 300, 16, seed=42, block_size=64)
    assert proj.describe() == {
        "kind": "rademacher",
        "seed": 42,
        "proj_dim": 16,
        "grad_dim": 300,
        "block_size": 64,
    }
    assert block_seed(42, 0) == block_seed(42, 0)
    assert len({block_seed(42, 0), block_seed(42, 1), block_seed(43, 0)}) == 3


@pytest.mark.parametrize(
    "args,match",
    [
        (("gaussian", 10, 4, 0), "gaussian"),
        (("normal", 0, 4, 0), "grad_dim"),
        (("normal", 10, -1, 0), "proj_dim"),
        (("normal", 10, 4, -5), "seed"),
        (("identity", 10, 4, 0), "proj_dim == grad_dim"),
    ],
)
def test_invalid_config(args, match):
    with pytest.raises(ConfigError, match=match):
        make_projector(*args)


def test_wrong_grad_shape():
    with pytest.raises(ConfigError, match="300"):
        make_projector("normal", 300, 8, seed=0).project(torch.zeros(2, 299))
