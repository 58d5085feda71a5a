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
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
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
    import torch

    keys = sample_keys(purpose, seed, timesteps, sample_ids)
    return torch.from_numpy(standard_normal(keys, shape))


# --------------------------------------------------------------------------- feature noise schemes

#: How feature noise is shared between samples (``features.noise``, per method; docs/noise.md).
#:
#: * ``independent``: no two samples share noise; the key is (split, sample id), so a training
#:   row and a query with the same id draw different noise;
#: * ``reference``: the reference code's structure as a pure function of the row position r in
#:   its split: group ``(r mod shard_rows) mod batch_size`` (it re-seeded one batch-wide draw per
#:   timestep, so the sample at batch position b of every batch of every split shared noise);
#: * ``common``: one draw per timestep shared by every sample of every split (common random
#:   numbers between queries and training rows).
NOISE_SCHEMES: tuple[str, ...] = ("independent", "reference", "common")

#: The reference's gradient batch size (CIFAR) and shard size, the defaults of ``reference``.
REFERENCE_BATCH_SIZE = 52
REFERENCE_SHARD_ROWS = 1000

#: Purpose of the feature noise (the measured outputs use their own purposes).
FEATURE_PURPOSE = "features"


def noise_tag(scheme: str, seed: int | None = None) -> str:
    """The feature path segment of a scheme: ``common``, or ``common-s3`` for a method that
    sets its own ``noise_seed`` (None: ``features.noise_seed``)."""
    return scheme if seed is None else f"{scheme}-s{int(seed)}"


def split_noise_tag(tag: str) -> tuple[str, int | None]:
    """(scheme, seed or None) of a :func:`noise_tag`."""
    from diffattr.errors import ConfigError

    scheme, _, seed = tag.partition("-s")
    if scheme not in NOISE_SCHEMES or (seed and not seed.isdigit()):
        raise ConfigError(f"{tag!r} is not a feature-noise tag (<scheme> or <scheme>-s<seed>)")
    return scheme, int(seed) if seed else None


#: Wildcard pattern of :func:`noise_tag`.
NOISE_TAG_PATTERN = f"({'|'.join(NOISE_SCHEMES)})(-s[0-9]+)?"


def _code(text: str) -> np.uint64:
    return _splitmix64(np.full((), _purpose_code(text), dtype=np.uint64))


def feature_noise_keys(
    scheme: str,
    split: str,
    sample_ids: np.ndarray | Sequence[int],
    positions: np.ndarray | Sequence[int],
    batch_size: int = REFERENCE_BATCH_SIZE,
    shard_rows: int = REFERENCE_SHARD_ROWS,
) -> np.ndarray:
    """One uint64 noise key per sample for :func:`sample_noise` under ``scheme``.

    ``sample_ids`` are the samples' ids and ``positions`` their row positions in the split
    (both [n]); ``batch_size`` and ``shard_rows`` define the ``reference`` groups. Samples with
    equal keys get the same noise at every timestep; the keys of the three schemes never
    coincide except by a 2⁻⁶⁴ accident.
    """
    from diffattr.errors import ConfigError

    if scheme not in NOISE_SCHEMES:
        raise ConfigError(
            f"feature noise scheme {scheme!r} is unknown; valid: {list(NOISE_SCHEMES)}"
        )
    ids = np.asarray(sample_ids, dtype=np.int64).reshape(-1)
    rows = np.asarray(positions, dtype=np.int64).reshape(-1)
    if rows.shape != ids.shape:
        raise ConfigError(
            f"positions {rows.shape} and sample_ids {ids.shape} must have one entry per sample"
        )
    if scheme == "independent":
        if not split:
            raise ConfigError("independent feature noise needs the split name (train, val, gen)")
        base = _splitmix64(_code("independent") ^ _code(split))
        return _splitmix64(base ^ ids.astype(np.uint64))
    if scheme == "common":
        return np.full(ids.shape, _code("common"), dtype=np.uint64)
    for name, value in (("batch_size", batch_size), ("shard_rows", shard_rows)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ConfigError(
                f"reference feature noise: {name} must be a positive integer, got {value!r}"
            )
    if (rows < 0).any():
        raise ConfigError(f"row positions must be non-negative, got min {int(rows.min())}")
    groups = (rows % shard_rows) % batch_size
    return _splitmix64(_code("reference") ^ groups.astype(np.uint64))


def feature_noise_attrs(scheme: str, batch_size: int, shard_rows: int) -> dict[str, object]:
    """The provenance of a feature file's noise (the reference geometry only where it is used)."""
    if scheme == "reference":
        return {
            "noise": scheme,
            "noise_batch_size": int(batch_size),
            "noise_shard_rows": int(shard_rows),
        }
    return {"noise": scheme, "noise_batch_size": 0, "noise_shard_rows": 0}
