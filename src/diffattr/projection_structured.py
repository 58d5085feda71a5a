"""Structured (Kronecker-factored, LoGra-style) projection of per-sample gradients.

It never forms the dense [P, Z] matrix nor a per-sample [B, P] gradient. For a Linear or Conv2d
weight W (matrix shape d_out × d_in; d_in = C_in·kh·kw for a convolution) the per-sample gradient
is Σ_positions δ aᵀ (δ: output gradient, a: input, unfolded for a convolution), so

    (P_out ⊗ P_in)ᵀ vec(∇W) = vec(Σ_positions (P_outᵀ δ)(P_inᵀ a)ᵀ),

with two small seeded matrices P_out [d_out, r_out] and P_in [d_in, r_in]. P_inᵀ a of a
convolution is a convolution of the input with P_in as an r_in-channel kernel (same stride,
padding, dilation), so nothing is unfolded. Layers are captured by :mod:`diffattr.layer_capture`
(attention projections and peft LoRA factors are Linear modules). Biases, GroupNorm and LayerNorm
parameters (small) form the **rest** group: their exact per-sample gradients (Σ δ, Σ δ·x̂) are
projected with a dense seeded matrix.

**Layout (the split of Z).** Groups are the weights of the tracked layers plus the rest group;
group g has P_g parameters and gets z_g ≥ 1 dimensions, with Σ z_g = Z, z_g ≤ P_g, and z_g
proportional to a weight w_g (``allocation``): ``energy`` w = the group's share of the squared
norm of the per-sample mean gradients of the first training rows (see
:mod:`diffattr.calibration`; the split that minimises the summed variance
Σ_g E_g²/z_g of the block kernels), ``proportional`` w = P_g (the share a parameter has in a
dense projection), ``sqrt`` w = √P_g, ``equal`` w = 1. Shares above P_g are
capped and the excess redistributed; integers by largest remainder. A layer with z_g dimensions
uses r_out = round(√(z_g·d_out/d_in)) (clamped to 1..d_out), r_in = ⌈z_g / r_out⌉ (≤ d_in) and
keeps the first z_g entries of the row-major r_out × r_in block. Features of group g are scaled
by √(Z / z_g), so that E[φ(g)·φ(h)] = Z·⟨g, h⟩ for any layout, the same kernel scale as the
dense projection (whose entries are N(0, 1) without 1/√Z scaling; λ grids stay comparable).

**Matrices** are :func:`diffattr.counter_rng.counter_matrix` with key ``matrix_key(seed,
"structured", kind, group name, role, rows, cols)``: a pure function of (seed, layer name,
shapes), generated on the model's device, identical in every job and on CPU and CUDA. A factor
with as many columns as rows (a side that is not reduced, e.g. the one output channel of a
grayscale model's last convolution, or a whole small layer under the ``energy`` split) is
√rows · I instead: exact, with the same E[P Pᵀ] as a Gaussian factor.

**Mixing** (``Split.mixing`` = m > 1, ``features.structured_mixing``): the blocks split m·Z
dimensions, and one dense counter matrix [m·Z, Z] / √(m·Z) maps them to Z (:meth:`finish`, or
per job in blocks of rows when the matrix is too large to hold: :meth:`finish_rows`). A
Kronecker block of a near-low-rank gradient concentrates like r_out + r_in dimensions, not
r_out·r_in; the dense map restores a Gaussian sketch's concentration (docs/projection.md).

Since the projection is linear, the feature of a sample is the mean over its K timesteps of the
projected per-(sample, timestep) gradients, which equals the projection of the mean gradient.
:meth:`StructuredProjector.evaluation_features` returns those per-evaluation vectors before the
mean (the place for per-timestep normalisation).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from diffattr.calibration import CALIBRATED_ALLOCATIONS, CALIBRATION_DIGITS, Calibration
from diffattr.counter_rng import counter_matrix, matrix_key
from diffattr.errors import ConfigError
from diffattr.hadamard import SubsampledHadamard
from diffattr.layer_capture import (
    TrackedModule,
    backward_to_outputs,
    capture,
    normalized_input,
    tracked_modules,
)

ALLOCATIONS: tuple[str, ...] = ("energy", "proportional", "sqrt", "equal")
#: Recorded in every layout (and so in its digest): 2 since square factors are the scaled
#: identity, so that features of the earlier matrices never mix with these.
LAYOUT_VERSION = 2

STRUCTURED_KINDS: tuple[str, ...] = ("normal", "rademacher")
REST = "<rest>"


@dataclass(frozen=True)
class LayerBlock:
    """One tracked weight: columns ``offset .. offset + dim`` of the features."""

    name: str
    d_out: int
    d_in: int
    r_out: int
    r_in: int
    dim: int
    offset: int


@dataclass(frozen=True)
class Layout:
    """Per-layer blocks, then the rest group (``rest_params``: (name, numel) in order)."""

    blocks: tuple[LayerBlock, ...]
    rest_params: tuple[tuple[str, int], ...]
    rest_dim: int
    rest_offset: int
    proj_dim: int
    allocation: str
    #: the calibration shares of a calibrated allocation (blocks, then the rest group)
    energies: tuple[float, ...] | None = None
    #: with mixing (``mixing`` > 1): the features' Z, reached from the blocks' ``proj_dim``
    #: by one dense map
    mixed_dim: int | None = None
    mixing: int = 1
    #: the map from the blocks to Z (:data:`MIXERS`); recorded only when not ``gaussian``, so
    #: that the layouts (and digests) of earlier runs are unchanged
    mixer: str = "gaussian"

    def as_json(self) -> str:
        calibration = {} if self.energies is None else {"energies": list(self.energies)}
        mixed = {} if self.mixing == 1 else {"mixing": self.mixing, "mixed_dim": self.mixed_dim}
        if self.mixing > 1 and self.mixer != "gaussian":
            mixed["mixer"] = self.mixer
        return json.dumps(
            {
                "version": LAYOUT_VERSION,
                **calibration,
                **mixed,
                "allocation": self.allocation,
                "proj_dim": self.proj_dim,
                "blocks": [
                    [b.name, b.d_out, b.d_in, b.r_out, b.r_in, b.dim, b.offset] for b in self.blocks
                ],
                "rest_params": [list(p) for p in self.rest_params],
                "rest_dim": self.rest_dim,
                "rest_offset": self.rest_offset,
            },
            separators=(",", ":"),
        )

    def digest(self) -> str:
        return hashlib.blake2b(self.as_json().encode(), digest_size=16).hexdigest()


def allocate(sizes: list[int], weights: list[float], total: int) -> list[int]:
    """Integers z_g ≥ 1 with Σ z_g = total, z_g ≤ sizes[g], z_g ∝ weights (capped, see module)."""
    count = len(sizes)
    if count == 0:
        raise ConfigError("the model has no trainable parameters to project")
    if total < count or total > sum(sizes):
        raise ConfigError(
            f"proj_dim = {total} cannot be split over {count} parameter groups of "
            f"{sum(sizes)} parameters: the structured projection needs "
            f"{count} <= proj_dim <= {sum(sizes)} (use features.projection: dense)"
        )
    z = [1] * count
    caps = [s - 1 for s in sizes]
    remaining = total - count
    active = [g for g in range(count) if caps[g] > 0]
    shares = [0.0] * count
    while remaining > 0 and active:
        weight_sum = sum(weights[g] for g in active)
        shares = {g: remaining * weights[g] / weight_sum for g in active}
        capped = [g for g in active if shares[g] >= caps[g]]
        if not capped:
            break
        for g in capped:
            z[g] += caps[g]
            remaining -= caps[g]
        active = [g for g in active if g not in capped]
    if remaining > 0 and active:
        floors = {g: int(math.floor(shares[g])) for g in active}
        for g in active:
            z[g] += floors[g]
        left = remaining - sum(floors.values())
        order = sorted(active, key=lambda g: (-(shares[g] - floors[g]), g))
        for g in order[:left]:
            z[g] += 1
    return z


def factor_dims(dim: int, d_out: int, d_in: int) -> tuple[int, int]:
    """(r_out, r_in) with r_out·r_in ≥ dim, r_out ≤ d_out, r_in ≤ d_in (see the module docstring)."""
    r_out = min(d_out, max(1, round(math.sqrt(dim * d_out / d_in))))
    r_in = min(d_in, -(-dim // r_out))
    if r_out * r_in < dim:
        r_out = min(d_out, -(-dim // r_in))
    return r_out, r_in


def layout_groups(model: torch.nn.Module) -> list[tuple[str, tuple[str, ...]]]:
    """(group, its parameter names) in layout order: every tracked layer's weight (group = the
    layer's name), then the rest group :data:`REST` (biases and norm parameters) if any."""
    tracked = tracked_modules(model)
    groups = [(t.name, (t.weight,)) for t in tracked if t.kind != "norm" and t.weight is not None]
    rest = []
    for t in tracked:
        names = [t.bias] if t.kind != "norm" else [t.weight, t.bias]
        rest.extend(n for n in names if n is not None)
    if rest:
        groups.append((REST, tuple(rest)))
    return groups


def _checked_energies(energies: Any, count: int) -> list[float]:
    values = None if energies is None else list(energies)
    if (
        values is None
        or len(values) != count
        or not all(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 for v in values)
        or sum(values) <= 0
    ):
        shown = values if values is None or len(values) <= 8 else f"{values[:8]}..."
        raise ConfigError(
            f"the energy allocation needs {count} finite, non-negative calibration energies "
            f"with a positive sum (one per layout group), got {shown}"
        )
    return [float(v) for v in values]


def calibration_shares(energies: list[float]) -> list[float]:
    """Energies as shares of their sum, rounded to :data:`CALIBRATION_DIGITS` significant
    digits (what the layout records)."""
    total = math.fsum(energies)
    return [float(f"{e / total:.{CALIBRATION_DIGITS}g}") for e in energies]


def build_layout(
    model: torch.nn.Module,
    proj_dim: int,
    allocation: str = "proportional",
    energies: Any = None,
    mixing: int = 1,
    mixer: str = "gaussian",
) -> Layout:
    """The layout of Z over the model's trainable parameters: a pure function of the shapes and,
    for ``energy``, of ``energies`` (one per :func:`layout_groups` group). With ``mixing`` > 1
    the blocks split ``mixing`` · Z dimensions (at most the number of parameters) and
    ``mixed_dim`` records Z."""
    if allocation not in ALLOCATIONS:
        raise ConfigError(
            f"unknown structured allocation {allocation!r}; valid: {', '.join(ALLOCATIONS)}"
        )
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    _check_mixing(mixing, mixer)
    mixed_dim = None
    if mixing > 1:
        mixed_dim, proj_dim = (
            proj_dim,
            min(sum(p.numel() for p in params.values()), mixing * proj_dim),
        )
    by_name = {t.name: t for t in tracked_modules(model)}
    groups = layout_groups(model)
    sizes = [sum(params[n].numel() for n in names) for _, names in groups]
    if allocation in CALIBRATED_ALLOCATIONS:
        weights = _checked_energies(energies, len(groups))
    else:
        rule = {"proportional": float, "sqrt": math.sqrt, "equal": lambda s: 1.0}[allocation]
        weights = [rule(s) for s in sizes]
    dims = allocate(sizes, weights, proj_dim)
    blocks, offset, rest_dim, rest = [], 0, 0, ()
    for (name, names), dim in zip(groups, dims, strict=True):
        if name == REST:
            rest_dim, rest = dim, tuple((n, params[n].numel()) for n in names)
            continue
        t = by_name[name]
        r_out, r_in = factor_dims(dim, t.d_out, t.d_in)
        blocks.append(LayerBlock(t.name, t.d_out, t.d_in, r_out, r_in, dim, offset))
        offset += dim
    calibrated = tuple(weights) if allocation in CALIBRATED_ALLOCATIONS else None
    return Layout(
        tuple(blocks),
        rest,
        rest_dim,
        offset,
        proj_dim,
        allocation,
        calibrated,
        mixed_dim,
        mixing,
        mixer,
    )


#: A mixing matrix [mixing · Z, Z] of at most this many float32 bytes is held whole and
#: applied to every batch; a larger one is applied once per job, in blocks of
#: :data:`MIXING_BLOCK_BYTES` (:meth:`StructuredProjector.finish_rows`).
MAX_MIXING_BYTES = 1 << 30
MIXING_BLOCK_BYTES = 256 << 20


#: the maps from the m·Z block dimensions to Z: ``gaussian`` a dense counter matrix (of the
#: projection's entry kind), ``hadamard`` the subsampled randomized Hadamard transform
#: (:mod:`diffattr.hadamard`: no matrix, m·Z·log₂(m·Z) operations per row)
MIXERS: tuple[str, ...] = ("gaussian", "hadamard")


def _check_mixing(mixing: Any, mixer: Any = "gaussian") -> None:
    if isinstance(mixing, bool) or not isinstance(mixing, int) or mixing < 1:
        raise ConfigError(
            f"features.structured_mixing must be an integer >= 1 (1: no mixing), got {mixing!r}"
        )
    if mixer not in MIXERS:
        raise ConfigError(
            f"features.structured_mixer = {mixer!r}; valid mixers are: {', '.join(MIXERS)}"
        )


#: Longer layouts are stored zlib-compressed (base64): HDF5 attributes are limited to 64 KiB.
MAX_LAYOUT_CHARS = 48_000


def _layout_attr(text: str) -> dict[str, str]:
    if len(text) <= MAX_LAYOUT_CHARS:
        return {"layout": text}
    return {"layout_zlib_b64": base64.b64encode(zlib.compress(text.encode(), 9)).decode()}


def read_layout(attrs: dict[str, Any]) -> dict[str, Any]:
    """The layout a feature file records (``proj_layout`` or ``proj_layout_zlib_b64``)."""
    if "proj_layout" in attrs:
        return json.loads(attrs["proj_layout"])
    if "proj_layout_zlib_b64" in attrs:
        return json.loads(zlib.decompress(base64.b64decode(attrs["proj_layout_zlib_b64"])))
    raise ConfigError("these features record no structured projection layout")


class StructuredProjector:
    """Projects per-sample gradients of ``model`` layer by layer; build it with
    :func:`make_structured_projector`. ``grad_dim`` and ``proj_dim`` as for the dense one."""

    projection = "structured"

    def __init__(self, model: torch.nn.Module, seed: int, kind: str, layout: Layout) -> None:
        if kind not in STRUCTURED_KINDS:
            raise ConfigError(
                f"unknown projection kind {kind!r} for the structured projection; valid kinds "
                f"are: {', '.join(STRUCTURED_KINDS)}"
            )
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"projection seed must be a non-negative integer, got {seed!r}")
        self.kind, self.seed, self.layout = kind, seed, layout
        #: the features' Z; the blocks have ``sketch_dim`` (= Z without mixing)
        self.proj_dim = layout.proj_dim if layout.mixed_dim is None else layout.mixed_dim
        #: the blocks' dimension: what :meth:`evaluation_features` returns, :meth:`finish` maps
        self.sketch_dim = layout.proj_dim
        self.mixing, self.mixer = layout.mixing, layout.mixer
        self._hadamard: SubsampledHadamard | None = None
        self._rest_hadamard: SubsampledHadamard | None = None
        self.grad_dim = sum(p.numel() for p in model.parameters() if p.requires_grad)
        self._matrices: dict[tuple[str, str, str], torch.Tensor] = {}

    def matrix(self, group: str, role: str, rows: int, cols: int, device, dtype) -> torch.Tensor:
        """P_in / P_out of a layer (``role`` "in" / "out") or the rest matrix (role "rest")."""
        cache_key = (group, role, f"{device}/{dtype}")
        if cache_key not in self._matrices:
            if rows == cols:  # nothing to reduce: the exact map, scaled like a Gaussian factor
                eye = torch.eye(rows, device=device, dtype=dtype)
                self._matrices[cache_key] = eye.mul_(math.sqrt(rows))
            else:
                key = matrix_key(self.seed, "structured", self.kind, group, role, rows, cols)
                self._matrices[cache_key] = counter_matrix(
                    key, rows, cols, self.kind, device, dtype
                )
        return self._matrices[cache_key]

    def describe(self) -> dict[str, Any]:
        """Provenance: ``kind`` is ``structured-<entries>`` so that it never mixes with dense."""
        return {
            "projection": "structured",
            "kind": f"structured-{self.kind}",
            "seed": self.seed,
            "proj_dim": self.proj_dim,
            "grad_dim": self.grad_dim,
            "allocation": self.layout.allocation,
            **({} if self.mixing == 1 else {"mixing": self.mixing, "sketch_dim": self.sketch_dim}),
            **({"mixer": self.mixer} if self.mixing > 1 and self.mixer != "gaussian" else {}),
            "layout_digest": self.layout.digest(),
            **_layout_attr(self.layout.as_json()),
        }

    def dense_equivalent(self, model: torch.nn.Module) -> torch.Tensor:
        """The explicit [P, Z] matrix (float64) this projection applies to gradients in
        :func:`diffattr.features.trainable_parameters` order (for tests of small models)."""
        params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        offsets, start = {}, 0
        for name, p in params.items():
            offsets[name] = (start, p.numel())
            start += p.numel()
        out = torch.zeros(start, self.sketch_dim, dtype=torch.float64)
        scale_z = self.sketch_dim
        by_name = {t.name: t for t in tracked_modules(model)}
        for b in self.layout.blocks:
            p_out = self.matrix(b.name, "out", b.d_out, b.r_out, "cpu", torch.float64)
            p_in = self.matrix(b.name, "in", b.d_in, b.r_in, "cpu", torch.float64)
            kron = torch.kron(p_out, p_in)[:, : b.dim] * math.sqrt(scale_z / b.dim)
            first, numel = offsets[by_name[b.name].weight]
            out[first : first + numel, b.offset : b.offset + b.dim] = kron
        if self.layout.rest_dim:
            rest = self._rest_matrix("cpu", torch.float64)
            row = 0
            for name, numel in self.layout.rest_params:
                first, _ = offsets[name]
                stop = self.layout.rest_offset + self.layout.rest_dim
                out[first : first + numel, self.layout.rest_offset : stop] = rest[row : row + numel]
                row += numel
        if self.mixing == 1:
            return out
        if self.mixer == "hadamard":
            return out @ self._hadamard_map().matrix(torch.float64)
        return out @ self._mixing_matrix("cpu", torch.float64)

    def _hadamard_map(self) -> SubsampledHadamard:
        """The ``hadamard`` mixer: an SRHT from sketch_dim to Z, key ("<mix>", "hadamard", ...)."""
        if self._hadamard is None:
            key = matrix_key(
                self.seed, "structured", "<mix>", "hadamard", self.sketch_dim, self.proj_dim
            )
            self._hadamard = SubsampledHadamard(key, self.sketch_dim, self.proj_dim)
        return self._hadamard

    def _mixing_rows(self, rows: range, device, dtype=torch.float32) -> torch.Tensor:
        """Rows ``rows`` of the [sketch_dim, Z] N(0, 1) (or ±1) counter matrix, scaled by
        1/√sketch_dim so that E[φ(g)·φ(h)] stays Z·⟨g, h⟩."""
        key = matrix_key(
            self.seed, "structured", self.kind, "<mix>", "mix", self.sketch_dim, self.proj_dim
        )
        matrix = counter_matrix(key, rows, self.proj_dim, self.kind, device, dtype)
        return matrix.mul_(1.0 / math.sqrt(self.sketch_dim))

    def _mixing_matrix(self, device, dtype) -> torch.Tensor:
        """The whole mixing matrix (:meth:`_mixing_rows`), cached per device and dtype."""
        cache_key = ("<mix>", "mix", f"{device}/{dtype}")
        if cache_key not in self._matrices:
            self._matrices[cache_key] = self._mixing_rows(range(self.sketch_dim), device, dtype)
        return self._matrices[cache_key]

    @property
    def deferred(self) -> bool:
        """Whether the mixing matrix is too large to hold (:data:`MAX_MIXING_BYTES`): batches
        then keep their sketches and :meth:`finish_rows` mixes a job's rows at the end."""
        too_large = self.sketch_dim * self.proj_dim * 4 > MAX_MIXING_BYTES
        return self.mixing > 1 and self.mixer == "gaussian" and too_large

    @property
    def batch_dim(self) -> int:
        """Columns of a batch's features: Z, or ``sketch_dim`` while mixing is deferred."""
        return self.sketch_dim if self.deferred else self.proj_dim

    def finish(self, sketch: torch.Tensor) -> torch.Tensor:
        """[..., sketch_dim] block features → the [..., Z] features of a batch (the identity
        without mixing, or while it is deferred). Linear, so it commutes with the mean over
        timesteps."""
        if self.mixing == 1 or self.deferred:
            return sketch
        if self.mixer == "hadamard":
            return self._hadamard_map().apply(sketch)
        return sketch @ self._mixing_matrix(sketch.device, sketch.dtype)

    def finish_rows(self, rows: np.ndarray, device: Any = "cpu") -> np.ndarray:
        """A job's [n, batch_dim] features → [n, Z] float32: the deferred mixing, one block of
        the matrix's rows alive at a time (generated on ``device``); otherwise ``rows``."""
        if not self.deferred:
            return rows
        device = torch.device(device)
        block = max(1, MIXING_BLOCK_BYTES // (4 * self.proj_dim))
        sketches = torch.from_numpy(rows)
        out = torch.zeros(len(rows), self.proj_dim, dtype=torch.float64, device=device)
        for start in range(0, self.sketch_dim, block):
            span = range(start, min(start + block, self.sketch_dim))
            part = self._mixing_rows(span, device)
            out += (sketches[:, span.start : span.stop].to(device) @ part).double()
        return out.float().cpu().numpy()

    def _rest_matrix(self, device, dtype) -> torch.Tensor:
        """The rest group's explicit [rows, rest_dim] map (of :meth:`_project_rest`)."""
        rows = sum(n for _, n in self.layout.rest_params)
        return self._project_rest(torch.eye(rows, device=device, dtype=dtype))

    def _project_rest(self, grads: torch.Tensor) -> torch.Tensor:
        """The rest group's exact per-sample gradients [E, rows] → [E, rest_dim], with
        E‖·‖² = sketch_dim·‖g‖²: a dense counter matrix, or with the ``hadamard`` mixer an SRHT
        (its dense matrix would be rows × rest_dim: 3.3 GB at CIFAR-2 with m = 16)."""
        rows, dim = grads.shape[1], self.layout.rest_dim
        if self.mixing > 1 and self.mixer == "hadamard":
            if self._rest_hadamard is None:
                key = matrix_key(self.seed, "structured", REST, "hadamard", rows, dim)
                self._rest_hadamard = SubsampledHadamard(key, rows, dim)
            return self._rest_hadamard.apply(grads).mul_(math.sqrt(self.sketch_dim * rows / dim))
        cache_key = (REST, "rest-scaled", f"{grads.device}/{grads.dtype}")
        if cache_key not in self._matrices:
            matrix = self.matrix(REST, "rest", rows, dim, grads.device, grads.dtype)
            self._matrices[cache_key] = matrix * math.sqrt(self.sketch_dim / dim)
            del self._matrices[(REST, "rest", f"{grads.device}/{grads.dtype}")]
        return grads @ self._matrices[cache_key]

    def evaluation_features(
        self,
        model: torch.nn.Module,
        run_loss: Callable[[], tuple[torch.Tensor, torch.Tensor]],
        evaluations: int,
    ) -> torch.Tensor:
        """Block features [E, sketch_dim] (= Z without mixing; :meth:`finish` maps them to Z) of
        each of ``evaluations`` independent evaluations.

        ``run_loss()`` runs the batched forward pass of the E evaluations (inside the capture)
        and returns (Σ_e f_e, the model input, which requires grad). Row e is the projection of
        ∇_θ f_e, the per-(sample, timestep) gradient, before any average.
        """
        first = next(p for p in model.parameters() if p.requires_grad)
        device, dtype = first.device, first.dtype
        out = torch.zeros(evaluations, self.sketch_dim, dtype=dtype, device=device)
        rest_sizes = dict(self.layout.rest_params)
        rest_slots, row = {}, 0
        for name, numel in self.layout.rest_params:
            rest_slots[name] = (row, numel)
            row += numel
        rest = torch.zeros(evaluations, row, dtype=dtype, device=device) if row else None
        blocks = {b.name: b for b in self.layout.blocks}
        scale_z = self.sketch_dim

        def add_rest(name: str | None, value: torch.Tensor) -> None:
            if name is None:
                return
            start, numel = rest_slots[name]
            assert numel == rest_sizes[name]
            rest[:, start : start + numel] += value.reshape(evaluations, numel)

        input_bytes = [0]

        def callback(entry: TrackedModule, x: torch.Tensor, delta: torch.Tensor) -> None:
            module = entry.module
            input_bytes[0] += x.numel() * x.element_size()
            if entry.kind == "norm":
                xhat = normalized_input(module, x)
                if isinstance(module, torch.nn.GroupNorm):
                    dims = [d for d in range(delta.ndim) if d not in (0, 1)]
                else:
                    dims = list(range(1, delta.ndim - len(module.normalized_shape)))
                add_rest(entry.weight, (delta * xhat).sum(dim=dims) if dims else delta * xhat)
                add_rest(entry.bias, delta.sum(dim=dims) if dims else delta)
                return
            if entry.kind == "linear":
                delta3 = delta.reshape(evaluations, -1, entry.d_out)
                if entry.bias is not None:
                    add_rest(entry.bias, delta3.sum(dim=1))
            else:
                delta3 = delta.reshape(evaluations, entry.d_out, -1).transpose(1, 2)
                if entry.bias is not None:
                    add_rest(entry.bias, delta3.sum(dim=1))
            block = blocks.get(entry.name)
            if block is None:
                return
            p_out = self.matrix(block.name, "out", block.d_out, block.r_out, device, dtype)
            p_in = self.matrix(block.name, "in", block.d_in, block.r_in, device, dtype)
            if entry.kind == "linear":
                pa = x.reshape(evaluations, -1, entry.d_in) @ p_in  # [E, S, r_in]
            else:
                kernel = p_in.t().reshape(block.r_in, *module.weight.shape[1:])
                pa = torch.nn.functional.conv2d(
                    x, kernel, None, module.stride, module.padding, module.dilation
                )
                pa = pa.reshape(evaluations, block.r_in, -1).transpose(1, 2)
            pd = delta3 @ p_out  # [E, S, r_out]
            g = torch.bmm(pd.transpose(1, 2), pa).reshape(evaluations, -1)[:, : block.dim]
            out[:, block.offset : block.offset + block.dim] += g * math.sqrt(scale_z / block.dim)

        tracked = tracked_modules(model)
        with capture(tracked, callback) as sources:
            loss, inputs = run_loss()
            backward_to_outputs(loss, inputs, sources)
        #: bytes of the tracked layers' inputs in this call (sizes the next calls' batches)
        self.last_input_bytes = input_bytes[0]
        if rest is not None and self.layout.rest_dim:
            start = self.layout.rest_offset
            out[:, start : start + self.layout.rest_dim] = self._project_rest(rest)
        return out

    def __repr__(self) -> str:
        return (
            f"StructuredProjector(kind={self.kind!r}, seed={self.seed}, proj_dim={self.proj_dim}, "
            f"grad_dim={self.grad_dim}, layers={len(self.layout.blocks)}, "
            f"allocation={self.layout.allocation!r}, mixing={self.mixing})"
        )


@dataclass(frozen=True)
class Split:
    """How a structured projection splits Z: the ``allocation`` and, for a calibrated one, the
    ``calibrate`` function that gives the groups' energies."""

    allocation: str = "proportional"
    calibrate: Calibration | None = None
    #: blocks of ``mixing`` · Z dimensions, then one map to Z (1: none) ...
    mixing: int = 1
    #: ... of kind ``mixer`` (:data:`MIXERS`)
    mixer: str = "gaussian"


def make_structured_projector(
    model: torch.nn.Module,
    proj_dim: int,
    seed: int,
    kind: str = "normal",
    split: str | Split = "proportional",
) -> StructuredProjector:
    """A structured projector for ``model``'s trainable parameters; see the module docstring.

    ``split``: an allocation name, or a :class:`Split`; a calibrated allocation calls its
    ``calibrate`` once, with the model's layout groups."""
    split = Split(split) if isinstance(split, str) else split
    allocation, energies = split.allocation, None
    if allocation in CALIBRATED_ALLOCATIONS:
        if split.calibrate is None:
            raise ConfigError(
                f"the structured allocation {allocation!r} is calibrated on training rows, but "
                "this producer has none to give; pass a calibration or use "
                f"one of: {', '.join(a for a in ALLOCATIONS if a not in CALIBRATED_ALLOCATIONS)}"
            )
        groups = layout_groups(model)
        energies = calibration_shares(_checked_energies(split.calibrate(groups), len(groups)))
    layout = build_layout(model, int(proj_dim), allocation, energies, split.mixing, split.mixer)
    return StructuredProjector(model, seed, kind, layout)


PROJECTIONS: tuple[str, ...] = ("auto", "dense", "dense_counter", "structured")

#: Matrix kinds of :func:`make_feature_projector` (``features.proj_kind``): those every projection
#: above implements. ``identity``, a kind of :func:`diffattr.projection.make_projector` for tests,
#: has no counter or structured form and needs proj_dim = the number of parameters.
FEATURE_PROJECTION_KINDS: tuple[str, ...] = ("normal", "rademacher")


def choose_projection(
    projection: str, grad_dim: int, proj_dim: int, structured_ok: bool = True
) -> str:
    """The projection ``auto`` stands for (any other value is returned as is).

    ``dense`` (the cached matrix of :class:`diffattr.projection.Projector`) while the [P, Z]
    float32 matrix fits in ``DEFAULT_MAX_CACHE_BYTES`` (1 GiB); beyond that ``structured``, or
    ``dense_counter`` when the model has parameters the structured projection does not cover.
    """
    from diffattr.projection import DEFAULT_MAX_CACHE_BYTES

    if projection not in PROJECTIONS:
        raise ConfigError(
            f"unknown features.projection {projection!r}; valid: {', '.join(PROJECTIONS)}"
        )
    if projection != "auto":
        return projection
    if grad_dim * proj_dim * 4 <= DEFAULT_MAX_CACHE_BYTES:
        return "dense"
    return "structured" if structured_ok else "dense_counter"


def make_feature_projector(
    model: torch.nn.Module,
    proj_dim: int,
    seed: int,
    kind: str = "normal",
    projection: str = "auto",
    split: str | Split = "proportional",
):
    """The projector of every feature producer (features, Journey-TRAK, ``diffattr attribute``).

    ``projection`` is resolved by :func:`choose_projection` from the model's number of trainable
    parameters; ``split`` (an allocation name, or a :class:`Split` with the calibration, called
    only when a calibrated allocation is used) applies to the structured projection only.
    """
    from diffattr.projection import CounterProjector, make_projector

    split = Split(split) if isinstance(split, str) else split

    grad_dim = sum(p.numel() for p in model.parameters() if p.requires_grad)
    structured_ok = True
    if projection == "auto":
        try:
            tracked_modules(model)
        except ConfigError:
            structured_ok = False
    chosen = choose_projection(projection, grad_dim, proj_dim, structured_ok)
    if chosen == "structured":
        return make_structured_projector(model, proj_dim, seed, kind, split)
    if chosen == "dense_counter":
        return CounterProjector(kind, grad_dim, proj_dim, seed)
    return make_projector(kind, grad_dim, proj_dim, seed)


__all__ = [
    "Split",
    "calibration_shares",
    "FEATURE_PROJECTION_KINDS",
    "PROJECTIONS",
    "choose_projection",
    "make_feature_projector",
    "ALLOCATIONS",
    "LayerBlock",
    "Layout",
    "StructuredProjector",
    "allocate",
    "build_layout",
    "factor_dims",
    "layout_groups",
    "make_structured_projector",
    "read_layout",
]
