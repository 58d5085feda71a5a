"""Per-sample noise keyed by (purpose, seed, timestep, sample id), independent of batch layout.

The reference code drew one ``randn_like`` over the whole batch after a global reseed, so a
sample's noise depended on its batch position and on the batch size. Here each sample's noise is a
pure function of its key: a counter-based generator (splitmix64 mixing, Box-Muller transform)
evaluated on the CPU in exact integer arithmetic. Results are identical for any batch size,
sample order or device.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
import torch

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        return z ^ (z >> np.uint64(31))


def _purpose_code(purpose: str) -> np.uint64:
    return np.uint64(zlib.crc32(purpose.encode()))


def sample_keys(
    purpose: str, seed: int, timesteps: np.ndarray, sample_ids: np.ndarray
) -> np.ndarray:
    """One 64-bit key per (timestep, sample id) pair; the arrays broadcast against each other."""
    timesteps = np.asarray(timesteps, dtype=np.uint64)
    sample_ids = np.asarray(sample_ids, dtype=np.uint64)
    key = _splitmix64(np.full((), _purpose_code(purpose), dtype=np.uint64))
    key = _splitmix64(key ^ np.uint64(seed))
    key = _splitmix64(key ^ timesteps)
    return _splitmix64(key ^ sample_ids)


def standard_normal(keys: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Float32 standard normals of ``keys.shape + shape``, a pure function of each key."""
    keys = np.asarray(keys, dtype=np.uint64)
    size = int(np.prod(shape))
    pairs = (size + 1) // 2
    counters = np.arange(2 * pairs, dtype=np.uint64)
    with np.errstate(over="ignore"):
        bits = _splitmix64(keys[..., None] * _MIX2 + counters)
    uniforms = ((bits >> np.uint64(11)).astype(np.float64) + 0.5) * (2.0**-53)
    u1, u2 = uniforms[..., :pairs], uniforms[..., pairs:]
    radius = np.sqrt(-2.0 * np.log(u1))
    normals = np.concatenate([radius * np.cos(2 * np.pi * u2), radius * np.sin(2 * np.pi * u2)], -1)
    return normals[..., :size].astype(np.float32).reshape(*keys.shape, *shape)


def sample_noise(
    purpose: str,
    seed: int,
    timesteps: np.ndarray | Sequence[int] | int,
    sample_ids: np.ndarray | Sequence[int],
    shape: Sequence[int],
) -> torch.Tensor:
    """Noise for a batch: row b is keyed by (purpose, seed, timesteps[b], sample_ids[b]).

    ``timesteps`` may be a scalar (same t for every sample) or one value per sample.
    Returns a CPU float32 tensor of shape ``(len(sample_ids), *shape)``.
    """
    sample_ids = np.asarray(sample_ids)
    timesteps = np.broadcast_to(np.asarray(timesteps), sample_ids.shape)
    keys = sample_keys(purpose, seed, timesteps, sample_ids)
    return torch.from_numpy(standard_normal(keys, shape))
