"""DAS's per-training-sample residual weight (Lin et al. 2025, ``CIFAR2/07_score.py::load_error``).

For training image i and each of S uniform timesteps s, with the feature stage's noise ε_s
under the method's noise scheme (the draw its gradient features use,
:func:`diffattr.noise.feature_noise_keys` and :func:`diffattr.features._noisy_samples`):

    r_{i,s} = sqrt(mean over pixels of (ε_θ(x_{i,s}, s) − ε_s)²)      (the RMSE at s)
    w_i     = (1/S) Σ_s r_{i,s} / ‖r_i‖₂                                (‖·‖₂ across s)

w_i is a shape statistic of the residual profile (a flat profile gives 1/√S, a peaked one less),
not its magnitude. The pass is forward only (no gradients) and is its own job and file
(``residuals/main/{noise}/S{S}.h5``), so adding DAS to a finished run computes only this and its scores.

File layout: ``residuals`` float32 [N, S], ``weights`` float64 [N], ``ids`` int64 [N],
``timesteps`` int64 [S]; attrs ``model_digest``, ``noise_seed``, the noise scheme's attrs
(:func:`diffattr.noise.feature_noise_attrs`), ``timesteps``, ``S``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from diffattr.errors import ConfigError
from diffattr.queries import QueryRows

#: Timesteps per forward call and sample rows per chunk bound memory together.
MAX_EVALUATIONS = 512


def das_weights(residuals: np.ndarray) -> np.ndarray:
    """w_i = mean_s(r_{i,s} / ‖r_i‖₂) of an [N, S] residual matrix (a zero row gets weight 0)."""
    residuals = np.asarray(residuals, dtype=np.float64)
    if residuals.ndim != 2 or 0 in residuals.shape:
        raise ConfigError(f"residuals must be a non-empty [N, S] matrix, got {residuals.shape}")
    norms = np.linalg.norm(residuals, axis=1, keepdims=True)
    scaled = np.divide(residuals, norms, out=np.zeros_like(residuals), where=norms > 0)
    return scaled.mean(axis=1)


@torch.no_grad()
def residual_profile(
    model: torch.nn.Module,
    scheduler: Any,
    rows: QueryRows,
    timesteps: Sequence[int],
    noise_seed: int,
    *,
    max_evaluations: int = MAX_EVALUATIONS,
) -> torch.Tensor:
    """[B, S] RMSE of ε_θ(x_t, t) against the feature noise ε_t of ``rows`` (keyed by
    ``rows.noise_keys``, else the ids, as in :func:`diffattr.features.mean_gradients`) at each
    of the S timesteps."""
    from diffattr.features import _eval_mode, _noise_keys, _noisy_samples, _prepare_batch

    _, ids, x0, cond, timesteps = _prepare_batch(
        model, scheduler, rows.x0, rows.ids, timesteps, rows.cond
    )
    keys = _noise_keys(ids, rows.noise_keys)
    batch = len(ids)
    per_call = max(1, max_evaluations // max(1, batch))
    out = torch.empty(batch, len(timesteps), dtype=torch.float64)
    with _eval_mode(model):
        for start in range(0, len(timesteps), per_call):
            chunk = timesteps[start : start + per_call]
            x_t, eps = _noisy_samples(scheduler, x0, keys, chunk, noise_seed)
            count = len(chunk)
            flat_t = torch.tensor(chunk * batch, dtype=torch.long, device=x0.device)
            kwargs = {}
            if cond is not None:
                kwargs["encoder_hidden_states"] = cond.repeat_interleave(count, dim=0)
            pred = model(x_t.reshape(batch * count, *x_t.shape[2:]), flat_t, **kwargs).sample
            err = (pred.double() - eps.reshape(batch * count, *eps.shape[2:]).double()) ** 2
            rmse = err.reshape(batch, count, -1).mean(dim=2).sqrt()
            out[:, start : start + count] = rmse.cpu()
    return out
