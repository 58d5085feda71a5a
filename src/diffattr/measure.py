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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO

import numpy as np
import torch
from tqdm import tqdm

from diffattr.diffusers_imports import DDPMScheduler
from diffattr.errors import ConfigError
from diffattr.noise import sample_noise
from diffattr.outputs import OutputFn, get_output_fn
from diffattr.queries import QueryRows


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


@dataclass(frozen=True, kw_only=True)
class Measurement:
    """What :func:`measure_losses` measures: the output function ``output_fn`` (a name of
    :mod:`diffattr.outputs`, or the function) averaged over ``timesteps``, once per seed of
    ``noise_seeds``, with the noise of stream ``purpose`` keyed by sample id."""

    timesteps: Sequence[int] | np.ndarray
    noise_seeds: Sequence[int]
    purpose: str
    output_fn: str | OutputFn = "loss"

    def __post_init__(self) -> None:
        for name in ("timesteps", "noise_seeds"):
            if len(getattr(self, name)) == 0:
                raise ConfigError(f"Measurement.{name} is empty; measure at least one")


@torch.no_grad()
def measure_losses(
    model: torch.nn.Module,
    scheduler: DDPMScheduler,
    rows: QueryRows,
    measurement: Measurement,
    *,
    batch_size: int = 256,
    progress: IO[str] | None = None,
) -> np.ndarray:
    """Per-sample output of ``rows`` averaged over the timesteps, one row per noise seed:
    float64 [E, n].

    The output function is evaluated on the CPU in float32 on (ε̂, ε, t, scheduler); the default
    ``loss`` is mean_d (ε̂ − ε)². The noise is keyed by ``rows.ids`` (``rows.noise_keys`` must
    be None)."""
    if rows.noise_keys is not None:
        raise ConfigError("measured outputs key their noise by sample id; noise_keys must be None")
    timesteps, noise_seeds = measurement.timesteps, measurement.noise_seeds
    purpose, output_fn, cond = measurement.purpose, measurement.output_fn, rows.cond
    fn = get_output_fn(output_fn) if isinstance(output_fn, str) else output_fn
    device = next(model.parameters()).device
    images_t = torch.from_numpy(np.ascontiguousarray(rows.x0, dtype=np.float32))
    sample_ids = np.ascontiguousarray(rows.ids)
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
                batch = slice(start, start + batch_size)
                x0 = images_t[batch]
                noise = sample_noise(purpose, noise_seed, int(t), sample_ids[batch], x0.shape[1:])
                noisy = noisy_samples(x0, noise, alpha_bar)
                t_batch = torch.full((x0.shape[0],), int(t), dtype=torch.long)
                kwargs = {} if cond is None else {"encoder_hidden_states": cond[batch].to(device)}
                eps = model(noisy.to(device), t_batch.to(device), **kwargs).sample.float().cpu()
                totals[e_index, batch] += fn(eps, noise, t_batch, scheduler).double().numpy()
            bar.update(1)
    bar.close()
    return totals / len(timesteps)
