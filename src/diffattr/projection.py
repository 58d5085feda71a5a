"""Seeded random projections of gradient vectors, identical in every job (protocol §4).

The reference projects with ``trak.projectors.CudaProjector`` (fast_jl): a [P, Z] matrix with
N(0, 1) entries and **no 1/√Z scaling**; the scale of the regularisation λ depends on that. Here
the matrix is built from blocks of ``block_size`` rows over the parameter dimension P. Block b
comes from ``torch.Generator().manual_seed(block_seed(seed, b))`` on the CPU, so the matrix is a
pure function of (kind, seed, grad_dim, proj_dim, block_size): the same in every job, for any
batch, on any device. It is not bit-identical to fast_jl's matrix.

Kinds:

* ``normal``      entries N(0, 1) (the reference's ``proj_type = normal``);
* ``rademacher``  entries ±1 with equal probability;
* ``identity``    no projection (Z must equal P); for tests and debugging.

The blocks are cached in memory when the whole matrix (P·Z·4 bytes) fits in ``max_cache_bytes``;
otherwise each call regenerates them, which costs time but no memory.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch

from diffattr.errors import ConfigError

PROJECTION_KINDS: tuple[str, ...] = ("normal", "rademacher", "identity")
DEFAULT_BLOCK_SIZE = 1024
DEFAULT_MAX_CACHE_BYTES = 1 << 30


def block_seed(seed: int, block: int) -> int:
    """A 63-bit generator seed for block ``block`` of the matrix with seed ``seed``."""
    digest = hashlib.blake2b(f"diffattr-projection:{seed}:{block}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "little") >> 1


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return value


class Projector:
    """Projects per-sample gradients [B, P] to features [B, Z] with a seeded random matrix.

    Build it with :func:`make_projector`. ``project`` works on any device and returns float32.
    """

    projection = "dense"

    def __init__(
        self,
        kind: str,
        grad_dim: int,
        proj_dim: int,
        seed: int,
        block_size: int = DEFAULT_BLOCK_SIZE,
        max_cache_bytes: int = DEFAULT_MAX_CACHE_BYTES,
    ) -> None:
        if kind not in PROJECTION_KINDS:
            raise ConfigError(
                f"unknown projection kind {kind!r}; valid kinds are: {', '.join(PROJECTION_KINDS)}"
            )
        self.kind = kind
        self.grad_dim = _check_positive_int("grad_dim", grad_dim)
        self.proj_dim = _check_positive_int("proj_dim", proj_dim)
        self.block_size = _check_positive_int("block_size", block_size)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"projection seed must be a non-negative integer, got {seed!r}")
        self.seed = seed
        if isinstance(max_cache_bytes, bool) or not isinstance(max_cache_bytes, int):
            raise ConfigError(f"max_cache_bytes must be an integer, got {max_cache_bytes!r}")
        self.max_cache_bytes = max_cache_bytes
        if kind == "identity" and proj_dim != grad_dim:
            raise ConfigError(
                f"identity projection needs proj_dim == grad_dim, got proj_dim={proj_dim} "
                f"and grad_dim={grad_dim}"
            )
        self.num_blocks = -(-self.grad_dim // self.block_size)
        self.caches = self.kind != "identity" and grad_dim * proj_dim * 4 <= max_cache_bytes
        self._cache: dict[str, list[torch.Tensor]] = {}

    def describe(self) -> dict[str, Any]:
        """Provenance of the matrix, to store with the features it produced."""
        return {
            "kind": self.kind,
            "seed": self.seed,
            "proj_dim": self.proj_dim,
            "grad_dim": self.grad_dim,
            "block_size": self.block_size,
        }

    def block(self, index: int) -> torch.Tensor:
        """Rows ``index*block_size ..`` of the [P, Z] matrix, float32 on the CPU."""
        if not 0 <= index < self.num_blocks:
            raise ConfigError(f"block index {index} out of range 0..{self.num_blocks - 1}")
        if self.kind == "identity":
            raise ConfigError("the identity projection has no matrix blocks")
        start = index * self.block_size
        rows = min(self.block_size, self.grad_dim - start)
        generator = torch.Generator(device="cpu").manual_seed(block_seed(self.seed, index))
        if self.kind == "normal":
            return torch.randn((rows, self.proj_dim), generator=generator, dtype=torch.float32)
        bits = torch.randint(0, 2, (rows, self.proj_dim), generator=generator)
        return bits.to(torch.float32).mul_(2.0).sub_(1.0)

    def matrix(self) -> torch.Tensor:
        """The whole [P, Z] matrix (for tests and small problems)."""
        if self.kind == "identity":
            return torch.eye(self.grad_dim, dtype=torch.float32)
        blocks = self._cache.get("cpu") or [self.block(b) for b in range(self.num_blocks)]
        return torch.cat(blocks)

    def _blocks(self, device: torch.device):
        if not self.caches:
            for b in range(self.num_blocks):
                yield self.block(b).to(device)
            return
        key = str(device)
        if key not in self._cache:
            cpu = self._cache.get("cpu") or [self.block(b) for b in range(self.num_blocks)]
            self._cache[key] = [blk.to(device) for blk in cpu]
        yield from self._cache[key]

    def project(self, grads: torch.Tensor) -> torch.Tensor:
        """Project ``grads`` [B, P] to [B, Z] float32 on the same device."""
        if grads.ndim != 2 or grads.shape[1] != self.grad_dim:
            raise ConfigError(
                f"projector expects gradients of shape [B, {self.grad_dim}], "
                f"got {tuple(grads.shape)}"
            )
        grads = grads.detach()
        if self.kind == "identity":
            return grads.to(torch.float32, copy=True)
        out = torch.zeros(grads.shape[0], self.proj_dim, dtype=torch.float32, device=grads.device)
        for b, block in enumerate(self._blocks(grads.device)):
            start = b * self.block_size
            chunk = grads[:, start : start + block.shape[0]].to(torch.float32)
            out.addmm_(chunk, block)
        return out

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.describe().items())
        return f"Projector({args})"


class CounterProjector:
    """The dense projection with its matrix generated on the gradients' device.

    Entry (i, j) of the [P, Z] matrix is :func:`diffattr.counter_rng.counter_matrix` entry
    (i, j) for key ``matrix_key(seed, "dense", kind, grad_dim, proj_dim)``: the same matrix on
    CPU and CUDA, for any ``block_size``, with no host-side generation and no host→device copy.
    ``project`` generates one block of ``block_size`` rows at a time on ``grads.device`` and
    frees it before the next, so at most one block is alive. Its matrix differs from
    :class:`Projector`'s (a different generator), so ``describe()['kind']`` is
    ``dense_counter-<kind>`` and the two never mix.
    """

    projection = "dense_counter"

    def __init__(
        self, kind: str, grad_dim: int, proj_dim: int, seed: int, block_size: int = 4096
    ) -> None:
        from diffattr.counter_rng import COUNTER_KINDS, matrix_key

        if kind not in COUNTER_KINDS:
            raise ConfigError(
                f"unknown projection kind {kind!r} for the dense counter projection; valid "
                f"kinds are: {', '.join(COUNTER_KINDS)}"
            )
        self.kind = kind
        self.grad_dim = _check_positive_int("grad_dim", grad_dim)
        self.proj_dim = _check_positive_int("proj_dim", proj_dim)
        self.block_size = _check_positive_int("block_size", block_size)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"projection seed must be a non-negative integer, got {seed!r}")
        self.seed = seed
        self.key = matrix_key(seed, "dense", kind, grad_dim, proj_dim)
        self.num_blocks = -(-self.grad_dim // self.block_size)

    def describe(self) -> dict[str, Any]:
        return {
            "projection": "dense_counter",
            "kind": f"dense_counter-{self.kind}",
            "seed": self.seed,
            "proj_dim": self.proj_dim,
            "grad_dim": self.grad_dim,
            "block_size": self.block_size,
        }

    def block(
        self, index: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """Rows ``index*block_size ..`` of the [P, Z] matrix, generated on ``device``."""
        from diffattr.counter_rng import counter_matrix

        if not 0 <= index < self.num_blocks:
            raise ConfigError(f"block index {index} out of range 0..{self.num_blocks - 1}")
        start = index * self.block_size
        rows = range(start, min(start + self.block_size, self.grad_dim))
        return counter_matrix(self.key, rows, self.proj_dim, self.kind, device, dtype)

    def matrix(self) -> torch.Tensor:
        """The whole [P, Z] matrix (for tests and small problems)."""
        return torch.cat([self.block(b) for b in range(self.num_blocks)])

    def project(self, grads: torch.Tensor) -> torch.Tensor:
        """Project ``grads`` [B, P] to [B, Z] (float32, or float64 for float64 input)."""
        if grads.ndim != 2 or grads.shape[1] != self.grad_dim:
            raise ConfigError(
                f"projector expects gradients of shape [B, {self.grad_dim}], "
                f"got {tuple(grads.shape)}"
            )
        dtype = torch.float64 if grads.dtype == torch.float64 else torch.float32
        grads = grads.detach()
        out = torch.zeros(grads.shape[0], self.proj_dim, dtype=dtype, device=grads.device)
        for b in range(self.num_blocks):
            start = b * self.block_size
            block = self.block(b, grads.device, dtype)
            out.addmm_(grads[:, start : start + block.shape[0]].to(dtype), block)
            del block
        return out

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.describe().items())
        return f"CounterProjector({args})"


def make_projector(
    kind: str,
    grad_dim: int,
    proj_dim: int,
    seed: int,
    block_size: int = DEFAULT_BLOCK_SIZE,
    max_cache_bytes: int = DEFAULT_MAX_CACHE_BYTES,
) -> Projector:
    """A seeded projector from ``grad_dim`` to ``proj_dim`` dimensions; see the module docstring."""
    return Projector(kind, grad_dim, proj_dim, seed, block_size, max_cache_bytes)


__all__ = ["PROJECTION_KINDS", "CounterProjector", "Projector", "block_seed", "make_projector"]
