"""Counter-based random matrices: entry (i, j) is a pure function of (key, i·cols + j).

The dense counter projection and the structured projection draw their matrices here, on the
device that uses them, with no host-side generator and no host→device copy. The formula (the same
splitmix64 stream as :mod:`diffattr.noise`, in wrapping 64-bit integer arithmetic):

* ``mix(x)``: z = x + φ; z = (z ^ (z >> 30))·M1; z = (z ^ (z >> 27))·M2; z ^ (z >> 31), with
  φ = 0x9E3779B97F4A7C15, M1 = 0xBF58476D1CE4E5B9, M2 = 0x94D049BB133111EB, all mod 2⁶⁴ and
  logical shifts;
* ``bits(c) = mix(key + c·φ)`` (the c-th output of a splitmix64 stream that starts at ``key``);
* ``U(c) = ((bits(c) >> 11) + 0.5) · 2⁻⁵³``, a uniform in (0, 1) from the top 53 bits;
* ``normal``: entry e = i·cols + j is √(−2 ln U(2e)) · cos(2π U(2e + 1)) (Box-Muller, float64,
  rounded to the output dtype);
* ``rademacher``: entry e is +1 if the top bit of bits(e) is set, otherwise −1.

Integer steps are exact on every device. Normal entries go through float64 ``log``/``cos``; CPU and
CUDA libraries agree to an ulp of float64, so the float32 matrices are bitwise identical except
for entries within 1e-16 of a float32 rounding boundary (none in the tests).
:func:`counter_matrix_reference` is the same formula in NumPy ``uint64``, for tests.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import torch

from diffattr.errors import ConfigError

COUNTER_KINDS: tuple[str, ...] = ("normal", "rademacher")
_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB
#: Entries generated per pass (bounds the int64 temporaries of one call to a few hundred MB).
CHUNK_ENTRIES = 1 << 22


def _signed(value: int) -> int:
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value


def _xor_srl_(z: torch.Tensor, shift: int) -> torch.Tensor:
    """z ^= z >> shift (logical), in place."""
    return z.bitwise_xor_(z.bitwise_right_shift(shift).bitwise_and_((1 << (64 - shift)) - 1))


def _mix_(z: torch.Tensor) -> torch.Tensor:
    """``mix`` of the module docstring, in place (the whole generator: 2.9× faster than with
    out-of-place steps on one CPU thread, bitwise the same matrices)."""
    _xor_srl_(z.add_(_signed(_GOLDEN)), 30).mul_(_signed(_MIX1))
    _xor_srl_(z, 27).mul_(_signed(_MIX2))
    return _xor_srl_(z, 31)


def matrix_key(*parts: object) -> int:
    """A 64-bit key (as a non-negative int) from the parts' text, e.g. (seed, layer, role, shape)."""
    text = ":".join(str(p) for p in ("diffattr-counter-matrix", *parts))
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def _checked_rows(kind: str, rows: int | range, cols: int) -> range:
    """``rows`` as a range of row indices (an int: the first ``rows`` rows), checked with
    ``kind`` and ``cols``."""
    if kind not in COUNTER_KINDS:
        raise ConfigError(
            f"unknown counter matrix kind {kind!r}; valid kinds are: {', '.join(COUNTER_KINDS)}"
        )
    if isinstance(rows, range) and (rows.step != 1 or rows.start < 0 or rows.stop < rows.start):
        raise ConfigError(
            f"counter matrix rows must be a range of row indices >= 0 with step 1, got {rows!r}"
        )
    if (not isinstance(rows, range) and rows < 0) or cols < 1:
        raise ConfigError(f"counter matrix needs rows >= 0 and cols >= 1, got {rows} x {cols}")
    return rows if isinstance(rows, range) else range(rows)


def counter_matrix(
    key: int,
    rows: int | range,
    cols: int,
    kind: str = "normal",
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Rows ``rows`` (a range of row indices, step 1; an int ``n``: rows 0 .. n − 1) of the
    counter matrix with ``cols`` columns."""
    span = _checked_rows(kind, rows, cols)
    device = torch.device(device)
    out = torch.empty((len(span), cols), dtype=dtype, device=device)
    flat = out.view(-1)
    total = len(span) * cols
    base = span.start * cols
    skey = _signed(key)
    for start in range(0, total, CHUNK_ENTRIES):
        stop = min(start + CHUNK_ENTRIES, total)
        if kind == "rademacher":
            entries = torch.arange(base + start, base + stop, dtype=torch.int64, device=device)
            bits = _mix_(entries.mul_(_signed(_GOLDEN)).add_(skey))
            flat[start:stop] = torch.where(bits < 0, 1.0, -1.0).to(dtype)
            continue
        counters = torch.arange(
            2 * (base + start), 2 * (base + stop), 2, dtype=torch.int64, device=device
        )
        u1 = _uniform_(_mix_(counters.mul(_signed(_GOLDEN)).add_(skey)))
        u2 = _uniform_(_mix_(counters.add_(1).mul_(_signed(_GOLDEN)).add_(skey)))
        del counters
        values = u1.log_().mul_(-2.0).sqrt_().mul_(u2.mul_(2.0 * math.pi).cos_())
        flat[start:stop] = values.to(dtype)
    return out


def _uniform_(bits: torch.Tensor) -> torch.Tensor:
    """U of the module docstring (float64), reusing ``bits`` for the shift."""
    return (
        bits.bitwise_right_shift_(11).bitwise_and_((1 << 53) - 1).double().add_(0.5).mul_(2.0**-53)
    )


def counter_matrix_reference(
    key: int, rows: int | range, cols: int, kind: str = "normal"
) -> np.ndarray:
    """The module docstring's formula in NumPy uint64 (slow; for tests), float64; ``rows`` as
    in :func:`counter_matrix`."""
    span = _checked_rows(kind, rows, cols)
    row_start, rows = span.start, len(span)
    golden, m1, m2 = np.uint64(_GOLDEN), np.uint64(_MIX1), np.uint64(_MIX2)

    def mix(x):
        with np.errstate(over="ignore"):
            z = x + golden
            z = (z ^ (z >> np.uint64(30))) * m1
            z = (z ^ (z >> np.uint64(27))) * m2
            return z ^ (z >> np.uint64(31))

    entries = np.arange(row_start * cols, (row_start + rows) * cols, dtype=np.uint64)
    k = np.uint64(key)
    with np.errstate(over="ignore"):
        if kind == "rademacher":
            bits = mix(k + entries * golden)
            return np.where(bits >> np.uint64(63), 1.0, -1.0).reshape(rows, cols)
        c = entries * np.uint64(2)
        b1, b2 = mix(k + c * golden), mix(k + (c + np.uint64(1)) * golden)
    u1 = ((b1 >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53
    u2 = ((b2 >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53
    return (np.sqrt(-2.0 * np.log(u1)) * np.cos(2 * np.pi * u2)).reshape(rows, cols)


__all__ = ["COUNTER_KINDS", "counter_matrix", "counter_matrix_reference", "matrix_key"]
