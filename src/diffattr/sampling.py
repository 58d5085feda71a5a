"""Seeded DDIM generation: one generator per sample, so sample i is reproducible on its own.

Sample ``i`` starts from Gaussian noise drawn by a CPU ``torch.Generator`` seeded
``gen_seed * 1000 + i`` (the reference convention), then follows a deterministic DDIM trajectory
(η = 0 by default). Regenerating one sample with any model therefore starts from exactly the same
noise as the original.
"""

from __future__ import annotations

from typing import IO

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
from tqdm import tqdm

from diffattr.errors import ConfigError


def sample_seeds(num_samples: int, gen_seed: int) -> np.ndarray:
    """The per-sample generator seeds of a generated set."""
    if num_samples < 1:
        raise ConfigError(f"generation.num_samples = {num_samples} must be at least 1")
    return gen_seed * 1000 + np.arange(num_samples, dtype=np.int64)


def initial_noise(seeds: np.ndarray, shape: tuple[int, ...]) -> torch.Tensor:
    """Starting noise for each seed, drawn from its own CPU generator."""
    return torch.stack(
        [torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
    )


@torch.no_grad()
def ddim_sample(
    model: UNet2DModel,
    train_scheduler: DDPMScheduler,
    seeds: np.ndarray,
    steps: int = 50,
    eta: float = 0.0,
    batch_size: int = 256,
    progress: IO[str] | None = None,
    trajectory: bool = False,
) -> dict[str, np.ndarray]:
    """Generate one image per seed; returns ``images`` float32 [n,C,H,W] in [-1,1].

    With ``trajectory=True`` also returns ``x0_trajectory`` [n, steps, C, H, W]: the predicted
    clean sample at every DDIM step (for Journey-TRAK features) and ``trajectory_timesteps``.
    """
    if steps < 1:
        raise ConfigError(f"generation.steps = {steps} must be at least 1")
    device = next(model.parameters()).device
    scheduler = DDIMScheduler.from_config(train_scheduler.config)
    scheduler.set_timesteps(steps)
    config = model.config
    shape = (config.in_channels, config.sample_size, config.sample_size)
    images, trajectories = [], []
    bar = tqdm(total=len(seeds), desc="generate", file=progress, disable=progress is None)
    for start in range(0, len(seeds), batch_size):
        chunk = seeds[start : start + batch_size]
        x = initial_noise(chunk, shape).to(device)
        x0_steps = []
        for t in scheduler.timesteps:
            eps = model(x, t).sample
            out = scheduler.step(eps, t, x, eta=eta, generator=None)
            x = out.prev_sample
            if trajectory:
                x0_steps.append(out.pred_original_sample.clamp(-1, 1).cpu())
        images.append(x.clamp(-1, 1).cpu())
        if trajectory:
            trajectories.append(torch.stack(x0_steps, dim=1))
        bar.update(len(chunk))
    bar.close()
    result = {"images": torch.cat(images).numpy().astype(np.float32)}
    if trajectory:
        result["x0_trajectory"] = torch.cat(trajectories).numpy().astype(np.float32)
        result["trajectory_timesteps"] = scheduler.timesteps.numpy().astype(np.int64)
    return result


def image_grid(images: np.ndarray, columns: int = 10) -> np.ndarray:
    """Tile float images [n,C,H,W] in [-1,1] into one uint8 HxWxC (or HxW) grid."""
    n, channels, height, width = images.shape
    rows = -(-n // columns)
    grid = np.zeros((rows * height, columns * width, channels), dtype=np.uint8)
    pixels = ((images.clip(-1, 1) + 1) * 127.5).round().astype(np.uint8).transpose(0, 2, 3, 1)
    for i, image in enumerate(pixels):
        r, c = divmod(i, columns)
        grid[r * height : (r + 1) * height, c * width : (c + 1) * width] = image
    return grid[..., 0] if channels == 1 else grid
