"""The subsampled randomized Hadamard transform (SRHT), a JL map that needs no matrix.

For x of width N (padded with zeros to N₂, the next power of two),

    y = √(N₂ / N) · (H D x)[S],

with D a diagonal of seeded ±1 signs, H the orthonormal Walsh-Hadamard matrix of order N₂
(applied in N₂·log₂ N₂ additions by :func:`fwht`, never formed) and S the first Z entries of a
seeded permutation of 0 .. N₂ − 1. E‖y‖² = (Z / N)·‖x‖², the scale of a dense map with
N(0, 1/N) entries, so it can replace one (``features.structured_mixer: hadamard``).

Signs and indices are counter draws (:mod:`diffattr.counter_rng`) of a key; the indices are
sorted on the CPU in float64, so the map is the same on every device.
"""

from __future__ import annotations

import math

import torch

from diffattr.counter_rng import counter_matrix


def fwht(x: torch.Tensor) -> torch.Tensor:
    """The orthonormal Walsh-Hadamard transform of the last dimension (a power of two): x Hᵀ
    with H[i, j] = (−1)^popcount(i & j) / √n (Sylvester order). Returns a new tensor."""
    n = x.shape[-1]
    if n & (n - 1):
        raise ValueError(f"fwht needs a power-of-two width, got {n}")
    lead = x.shape[:-1]
    y = x.reshape(-1, n).clone()
    rows = y.shape[0]
    half = 1
    while half < n:
        pairs = y.view(rows, n // (2 * half), 2, half)
        a, b = pairs[:, :, 0, :], pairs[:, :, 1, :]
        y = torch.stack((a + b, a - b), dim=2).view(rows, n)
        half *= 2
    return y.mul_(1.0 / math.sqrt(n)).reshape(*lead, n)


def next_power_of_two(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


class SubsampledHadamard:
    """The SRHT of the module docstring from width ``in_dim`` to ``out_dim`` (≤ the padded
    width), keyed by ``key`` (:func:`diffattr.counter_rng.matrix_key`)."""

    #: rows transformed at a time: bounds the transform's working memory (rows × N₂ × 2 values)
    ROWS_PER_CHUNK = 64

    def __init__(self, key: int, in_dim: int, out_dim: int) -> None:
        self.in_dim, self.out_dim = int(in_dim), int(out_dim)
        self.padded = next_power_of_two(self.in_dim)
        if not 1 <= self.out_dim <= self.padded:
            raise ValueError(
                f"a Hadamard map from {self.in_dim} dimensions gives 1 to {self.padded}, "
                f"not {self.out_dim}"
            )
        self.key = key
        self._signs = counter_matrix(key, 1, self.in_dim, "rademacher", "cpu", torch.float64)[0]
        order = counter_matrix(key ^ 1, 1, self.padded, "normal", "cpu", torch.float64)[0]
        self.indices = torch.argsort(order, stable=True)[: self.out_dim]
        self.scale = math.sqrt(self.padded / self.in_dim)
        self._on: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def _parts(self, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        cache_key = f"{device}/{dtype}"
        if cache_key not in self._on:
            signs = self._signs.to(device=device, dtype=dtype)
            self._on[cache_key] = signs, self.indices.to(device)
        return self._on[cache_key]

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """[..., in_dim] → [..., out_dim], linear in x."""
        if x.shape[-1] != self.in_dim:
            raise ValueError(f"expected width {self.in_dim}, got {x.shape[-1]}")
        signs, indices = self._parts(x.device, x.dtype)
        lead = x.shape[:-1]
        flat = x.reshape(-1, self.in_dim)
        out = torch.empty(flat.shape[0], self.out_dim, dtype=x.dtype, device=x.device)
        for start in range(0, flat.shape[0], self.ROWS_PER_CHUNK):
            part = flat[start : start + self.ROWS_PER_CHUNK] * signs
            padded = torch.nn.functional.pad(part, (0, self.padded - self.in_dim))
            out[start : start + len(part)] = fwht(padded)[:, indices].mul_(self.scale)
        return out.reshape(*lead, self.out_dim)

    def matrix(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """The explicit [in_dim, out_dim] matrix (for tests of small maps)."""
        return self.apply(torch.eye(self.in_dim, dtype=dtype))
