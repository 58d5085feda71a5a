"""Journey-TRAK: query features along the sampling trajectory (protocol §4.1, ``09_workshop``).

A simplified "The Journey, Not the Destination" (Georgiev et al. 2023), for generated samples only:

1. :func:`diffattr.jobs.features.record_trajectory` re-runs the seeded DDIM generation of
   ``samples/gen.h5`` with the main model and stores the predicted clean sample x̂0 of every step (clamped to [-1, 1])
   with the step's timestep t_i. It checks that the final images equal the stored ones.
2. :func:`diffattr.jobs.features.extract_trajectory_features` takes, for each step i, x̂0_i as
   the clean sample at t_i with fresh keyed noise (:func:`diffattr.noise.sample_noise`, as for every feature; always the
   ``independent`` scheme on the ``gen`` split, since the trajectory's timesteps are not the
   training features' timesteps, so no draw could be shared with a training row), the gradient
   of f (``loss``) there, averages over the steps and projects once.
3. ``journey_trak`` scores those query features against ordinary TRAK training features of the
   same f at K timesteps with the TRAK kernel over the λ grid (train and query timesteps differ
   by design; projection, f, noise seed and model must match).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from diffattr.errors import ConfigError
from diffattr.methods.base import Need, features_need, method_noise, register
from diffattr.methods.readout import READOUT_PARAM
from diffattr.methods.trak import OUTPUT_FN_PARAM, TrakKernel

if TYPE_CHECKING:
    from diffattr.features import GradientOptions
    from diffattr.queries import QueryRows
    from diffattr.settings import Runtime

#: What the training features and the trajectory features must share (not the timesteps).
CHECK_KEYS = (
    "proj_kind",
    "proj_seed",
    "proj_dim",
    "output_fn",
    "noise_seed",
    "model_digest",
)

#: Largest difference between re-generated and stored images before the trajectory is refused.
IMAGE_TOLERANCE = 1e-3


@register
class JourneyTrak(TrakKernel):
    kind = "journey_trak"
    summary = "TRAK with gen features averaged along the DDIM trajectory (gen only)"
    query_splits = ("gen",)
    check_keys = CHECK_KEYS
    # The trajectory features have no per-timestep normalisation (docs/methods.md).
    params = {"output_fn": OUTPUT_FN_PARAM, "readout": READOUT_PARAM}

    def needs(self, params: Mapping[str, Any], K: int, split: str) -> dict[str, list[Need]]:
        fn = params["output_fn"]
        return {
            "train": [features_need("main", fn, K, "train", method_noise(params))],
            "test": [Need("trajectory_features", {"fn": fn})],
        }


def trajectory_gradients(
    denoiser: Any,
    scheduler: Any,
    trajectory: QueryRows,
    options: GradientOptions,
    projector: Any,
    runtime: Runtime,
) -> np.ndarray:
    """Projected mean over steps i of ∇θ f at (x̂0_i, t_i): float32 [n, Z].

    ``trajectory.x0`` is the recorded x̂0 trajectory [n, steps, C, H, W], with the samples'
    ids and the [n, L, D] caption embeddings ``cond`` of a conditional model (or None); the
    noise is always keyed by the ``independent`` scheme on the ``gen`` split (module
    docstring), so it takes no noise keys. ``options.timesteps`` are the steps' timesteps t_i;
    each step's gradient is taken with ``options`` at its own timestep. ``runtime`` gives the
    batch size and the progress stream.

    A dense projector projects the mean [B, P] gradient once; a structured one projects each
    step with :func:`diffattr.features.projected_mean_gradients` (never forming [B, P]) and
    averages: the projection is linear, so both are the projection of the mean gradient.
    """
    import torch
    from tqdm import tqdm

    from diffattr.features import (
        batch_width,
        finish_rows,
        mean_gradients,
        projected_mean_gradients,
    )
    from diffattr.noise import feature_noise_keys
    from diffattr.queries import QueryRows

    if trajectory.noise_keys is not None:
        raise ConfigError(
            "trajectory features key their noise by the independent scheme on the gen split; "
            "pass the trajectory without noise_keys"
        )
    x0_trajectory, sample_ids, cond = trajectory.x0, trajectory.ids, trajectory.cond
    timesteps, batch_size, progress = options.timesteps, runtime.batch_size, runtime.progress
    n = x0_trajectory.shape[0]
    keys = feature_noise_keys("independent", "gen", sample_ids, np.arange(n))
    structured = getattr(projector, "projection", "dense") == "structured"
    out = np.empty((n, batch_width(projector)), dtype=np.float32)
    for start in tqdm(range(0, n, batch_size), file=progress, disable=progress is None):
        stop = min(start + batch_size, n)
        batch_cond = None if cond is None else cond[start:stop]
        total = None
        for step, t in enumerate(timesteps):
            x0 = torch.from_numpy(np.ascontiguousarray(x0_trajectory[start:stop, step]))
            inputs = QueryRows(x0, sample_ids[start:stop], batch_cond, keys[start:stop])
            step_options = dataclasses.replace(options, timesteps=[int(t)])
            if structured:
                part = projected_mean_gradients(
                    denoiser, scheduler, inputs, step_options, projector
                )
            else:  # sum the [B, P] gradients, project once
                part = mean_gradients(denoiser, scheduler, inputs, step_options).float()
            total = part if total is None else total.add_(part)
        total = total.div_(len(timesteps))
        out[start:stop] = (total if structured else projector.project(total)).cpu().numpy()
    return finish_rows(projector, out, next(denoiser.parameters()).device)
