"""Measured model outputs: the LDS ground truth.

For a model and a set of query samples, the output is the per-sample diffusion loss
``mean_d (ε_θ(x_t, t) − ε)²`` averaged over a timestep grid and several noise draws. The noise of
sample ``j`` at timestep ``t`` in draw ``e`` is keyed by (e, t, sample id), so the result does
not depend on batch size, order or device.
"""

from __future__ import annotations

from typing import IO

import numpy as np
import torch
from tqdm import tqdm

from diffattr.diffusers_imports import DDPMScheduler
from diffattr.errors import ConfigError
from diffattr.noise import sample_noise


def timestep_grid(count: int, num_train_timesteps: int = 1000) -> np.ndarray:
    """``count`` evenly spaced integer timesteps over [0, T); count = T gives every timestep."""
    if not 1 <= count <= num_train_timesteps:
        raise ConfigError(
            f"measure.timesteps = {count} must lie in 1..{num_train_timesteps} (the scheduler's T)"
        )
    return np.arange(0, num_train_timesteps, num_train_timesteps // count, dtype=np.int64)[:count]


@torch.no_grad()
def measure_losses(
    model: torch.nn.Module,
    scheduler: DDPMScheduler,
    images: np.ndarray,
    sample_ids: np.ndarray,
    timesteps: np.ndarray,
    noise_seeds: list[int],
    purpose: str,
    batch_size: int = 256,
    cond: torch.Tensor | None = None,
    progress: IO[str] | None = None,
) -> np.ndarray:
    """Per-sample loss averaged over ``timesteps``, one row per noise seed: float64 [E, n]."""
    device = next(model.parameters()).device
    images_t = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    sample_ids = np.ascontiguousarray(sample_ids)
    alphas = scheduler.alphas_cumprod.to(torch.float64)
    n = images_t.shape[0]
    totals = np.zeros((len(noise_seeds), n), dtype=np.float64)
    bar = tqdm(
        total=len(noise_seeds) * len(timesteps),
        desc=f"measure {purpose}",
        file=progress,
        mininterval=5,
        disable=progress is None,
    )
    for e_index, noise_seed in enumerate(noise_seeds):
        for t in timesteps:
            alpha_bar = float(alphas[int(t)])
            for start in range(0, n, batch_size):
                rows = slice(start, start + batch_size)
                x0 = images_t[rows]
                noise = sample_noise(purpose, noise_seed, int(t), sample_ids[rows], x0.shape[1:])
                noisy = (alpha_bar**0.5) * x0 + ((1 - alpha_bar) ** 0.5) * noise
                t_batch = torch.full((x0.shape[0],), int(t), dtype=torch.long, device=device)
                kwargs = {} if cond is None else {"encoder_hidden_states": cond[rows].to(device)}
                eps = model(noisy.to(device), t_batch, **kwargs).sample.float().cpu()
                totals[e_index, rows] += ((eps - noise) ** 2).flatten(1).mean(1).double().numpy()
            bar.update(1)
    bar.close()
    return totals / len(timesteps)
