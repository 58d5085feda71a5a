"""Calibration of the structured projection's ``energy`` allocation (docs/projection.md).

The structured projection splits Z over the layers. A layer's block kernel is an estimate whose
variance grows like E_g² / z_g, with E_g the layer's share of the squared gradient norm, so the
split that minimises the summed variance gives each layer z_g ∝ E_g. Measured on the embedded
default, that share is far from the parameter share: the 144-parameter output convolution holds
37 % of D-TRAK's gradient energy (21 % of TRAK's), and the proportional split gave it 2 of 1024
dimensions.

The energies come from the exact mean gradients (one plain backward pass per row,
:func:`calibration_energies`) of the first :data:`CALIBRATION_ROWS` rows of the train split, at
:data:`CALIBRATION_K` uniform timesteps, with noise keyed by the row ids and seeded by the
projection seed. That recipe depends on
neither K nor the feature-noise scheme nor the producer, so the train and query features of every
K, the Journey-TRAK trajectory features and ``diffattr attribute`` build the same layout from the
same model and output function; the scoring checks that their layout digests agree.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

#: The allocations that need calibration energies
#: (:func:`diffattr.projection_structured.build_layout`).
CALIBRATED_ALLOCATIONS: tuple[str, ...] = ("energy",)
#: The first rows of the train split whose gradients calibrate the ``energy`` allocation, at
#: :data:`CALIBRATION_K` uniform timesteps (the same for every K, noise scheme and producer, so
#: that train features, query features, Journey-TRAK and ``diffattr attribute`` agree).
CALIBRATION_ROWS = 16
CALIBRATION_K = 10
#: Significant digits the calibration shares are rounded to (so that float rounding of another
#: device or batch size does not move a dimension between layers).
CALIBRATION_DIGITS = 3
#: Rows per encoding call of the calibration (latent models encode in chunks).
CALIBRATION_CHUNK = 4

#: Calibration of the ``energy`` allocation: a model's layout groups (name, parameter names),
#: from :func:`diffattr.projection_structured.layout_groups`, -> one energy per group.
Calibration = Callable[[list[tuple[str, tuple[str, ...]]]], list[float]]


def calibration_energies(
    denoiser: Any,
    scheduler: Any,
    rows: Any,
    output_fn: str,
    groups: Sequence[tuple[str, Sequence[str]]],
    seed: int,
) -> list[float]:
    """Σ over ``rows`` (:class:`diffattr.queries.QueryRows`) of ‖ḡ_group‖² per group, with ḡ the
    row's mean gradient of ``output_fn`` over the calibration timesteps (sample r's noise at t is
    ``sample_noise("features", seed, t, key_r)``, as in the features).

    One plain backward pass per row, its timesteps as the batch: memory of one gradient and one
    batch of activations, never a per-sample [rows, P] matrix (at CIFAR-2 size, P = 38 M)."""
    import torch

    from diffattr.features import (
        _eval_mode,
        _noise_keys,
        _noisy_samples,
        _prepare_batch,
        select_timesteps,
    )
    from diffattr.outputs import get_output_fn

    steps = select_timesteps(CALIBRATION_K, "uniform", int(scheduler.config.num_train_timesteps))
    params, ids, x0, cond, steps = _prepare_batch(
        denoiser, scheduler, rows.x0, rows.ids, steps, rows.cond
    )
    x_t, eps = _noisy_samples(scheduler, x0, _noise_keys(ids, rows.noise_keys), steps, seed)
    fn, t = get_output_fn(output_fn), torch.tensor(steps, dtype=torch.long, device=x0.device)
    index = {name: i for i, name in enumerate(params)}
    totals = [0.0] * len(groups)
    with _eval_mode(denoiser):
        for r in range(len(ids)):
            kwargs = {}
            if cond is not None:
                kwargs["encoder_hidden_states"] = cond[r].expand(len(steps), *cond.shape[1:])
            prediction = denoiser(x_t[r], t, **kwargs).sample
            loss = fn(prediction, eps[r], t, scheduler).mean()
            grads = torch.autograd.grad(loss, list(params.values()))
            for g, (_, names) in enumerate(groups):
                totals[g] += math.fsum(float(grads[index[n]].double().pow(2).sum()) for n in names)
    return totals


def train_calibration(
    model: Any,
    images: np.ndarray,
    ids: np.ndarray,
    output_fn: str,
    seed: int,
    captions: Sequence[str] | None = None,
) -> Calibration:
    """The calibration of a producer: the first :data:`CALIBRATION_ROWS` of the train split's
    ``images`` / ``ids`` (and ``captions``, for a conditional model), encoded as the features
    encode them, evaluated only when the projector asks."""
    from diffattr.queries import QueryRows, encoded_queries

    images, ids = images[:CALIBRATION_ROWS], np.asarray(ids)[:CALIBRATION_ROWS]
    texts = None if captions is None else list(captions)[:CALIBRATION_ROWS]

    def calibrate(groups):
        totals = [0.0] * len(groups)
        for chunk, x0, cond in encoded_queries(model, images, texts, CALIBRATION_CHUNK):
            rows = QueryRows(x0, ids[chunk], cond, None)
            energies = calibration_energies(
                model.denoiser, model.scheduler, rows, output_fn, groups, seed
            )
            totals = [a + b for a, b in zip(totals, energies, strict=True)]
        return totals

    return calibrate


__all__ = [
    "CALIBRATED_ALLOCATIONS",
    "CALIBRATION_CHUNK",
    "CALIBRATION_DIGITS",
    "CALIBRATION_K",
    "CALIBRATION_ROWS",
    "Calibration",
    "calibration_energies",
    "train_calibration",
]
