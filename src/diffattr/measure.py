"""Measured model outputs: the LDS ground truth.

For a model and a set of query samples, the output is a registered output function
(:mod:`diffattr.outputs`, ``measure.output``; by default the per-sample diffusion loss
``mean_d (ε_θ(x_t, t) − ε)²``) averaged over a timestep grid and several noise draws. The noise of
sample ``j`` at timestep ``t`` in draw ``e`` is keyed by (e, t, sample id), so the result does
not depend on batch size, order or device.

Measuring another output is one ``@outputs.register`` function and ``measure.output: <name>``
in the config (plus the name in the schema's ``measure.output`` enum).
"""

from __future__ import annotations

from typing import IO

import numpy as np
import torch
from tqdm import tqdm

from diffattr.diffusers_imports import DDPMScheduler
from diffattr.errors import ConfigError
from diffattr.noise import sample_noise
from diffattr.outputs import OutputFn, get_output_fn


def timestep_grid(count: int, num_train_timesteps: int = 1000) -> np.ndarray:
    """``count`` evenly spaced integer timesteps over [0, T); count = T gives every timestep."""
    if not 1 <= count <= num_train_timesteps:
        raise ConfigError(
            f"measure.timesteps = {count} must lie in 1..{num_train_timesteps} (the scheduler's T)"
        )
    return np.arange(0, num_train_timesteps, num_train_timesteps // count, dtype=np.int64)[:count]


def noisy_samples(x0: torch.Tensor, noise: torch.Tensor, alpha_bar: float) -> torch.Tensor:
    """x_t = √ᾱ_t x0 + √(1 − ᾱ_t) ε, the square roots taken in float64 of ᾱ_t.

    Not ``scheduler.add_noise`` (which the features use): that takes 1 − ᾱ_t and the square roots
    in float32 and differs in the last bit at about one timestep in ten, so switching would change
    every measured file."""
    return (alpha_bar**0.5) * x0 + ((1 - alpha_bar) ** 0.5) * noise


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
    output_fn: str | OutputFn = "loss",
) -> np.ndarray:
    """Per-sample output averaged over ``timesteps``, one row per noise seed: float64 [E, n].

    ``output_fn`` is a name of :mod:`diffattr.outputs` (or the function), evaluated on the CPU
    in float32 on (ε̂, ε, t, scheduler); the default ``loss`` is mean_d (ε̂ − ε)²."""
    fn = get_output_fn(output_fn) if isinstance(output_fn, str) else output_fn
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
                noisy = noisy_samples(x0, noise, alpha_bar)
                t_batch = torch.full((x0.shape[0],), int(t), dtype=torch.long)
                kwargs = {} if cond is None else {"encoder_hidden_states": cond[rows].to(device)}
                eps = model(noisy.to(device), t_batch.to(device), **kwargs).sample.float().cpu()
                totals[e_index, rows] += fn(eps, noise, t_batch, scheduler).double().numpy()
            bar.update(1)
    bar.close()
    return totals / len(timesteps)
