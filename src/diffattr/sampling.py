"""Seeded DDIM generation: one generator per sample, so sample i is reproducible on its own.

Sample ``i`` owns a CPU ``torch.Generator`` seeded ``gen_seed * 1000 + i`` (the reference
convention). It draws the sample's starting noise and then, with η > 0, every DDIM step's fresh
noise for that sample alone, so a sample does not depend on which batch it shares. Regenerating
one sample with any model therefore draws exactly the same noise as the original, at any η.

A conditional latent model (Stable Diffusion + LoRA) is sampled in latent space with
classifier-free guidance, ε = ε(∅) + w (ε(prompt) − ε(∅)) with the empty prompt as ∅, and the
final latents are decoded by the VAE (protocol §1.3). Each sample's prompt is an explicit input
(:func:`assign_prompts`), recorded beside the images, never implied by the sample index later.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm import tqdm

from diffattr.diffusers_imports import DDIMScheduler, DDPMScheduler, UNet2DModel
from diffattr.errors import ConfigError
from diffattr.images import channels_last

if TYPE_CHECKING:
    from diffattr.models import DiffusionModel


@dataclass(frozen=True, kw_only=True)
class DdimSettings:
    """How a DDIM run goes: ``steps`` DDIM steps with noise ``eta`` (0: deterministic), the
    classifier-free ``guidance_scale`` of a conditional model (None for an unconditional one)
    and the batch size. On CPU the batch layout fixes the last bits of a sample, so a samples
    file records its batch size and a regeneration reuses it."""

    steps: int = 50
    eta: float = 0.0
    guidance_scale: float | None = 7.5
    batch_size: int = 256

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ConfigError(f"generation.steps = {self.steps} must be at least 1")
        if self.batch_size < 1:
            raise ConfigError(f"DdimSettings.batch_size = {self.batch_size} must be at least 1")


def sample_seeds(num_samples: int, gen_seed: int) -> np.ndarray:
    """The per-sample generator seeds of a generated set."""
    if num_samples < 1:
        raise ConfigError(f"generation.num_samples = {num_samples} must be at least 1")
    return gen_seed * 1000 + np.arange(num_samples, dtype=np.int64)


def ddim_scheduler(train_scheduler: Any) -> DDIMScheduler:
    """``DDIMScheduler.from_config(train_scheduler.config)``, built from the keys DDIM takes.

    ``from_config`` first imports every scheduler diffusers lists as compatible, to drop their
    keys (one imports ``scipy.stats``); the schedule is the same either way. As there, keys the
    training scheduler took as defaults (``_use_default_values``) take DDIM's defaults."""
    import inspect

    accepted = set(inspect.signature(DDIMScheduler.__init__).parameters) - {"self"}
    config = train_scheduler.config
    defaults = set(config.get("_use_default_values", []))
    kwargs = {k: v for k, v in config.items() if k in accepted and k not in defaults}
    return DDIMScheduler(**kwargs)


def sample_generators(seeds: np.ndarray) -> list[torch.Generator]:
    """One CPU generator per sample, seeded with its seed."""
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


def initial_noise(generators: Sequence[torch.Generator], shape: tuple[int, ...]) -> torch.Tensor:
    """Starting noise for each sample, the first draw of its own generator."""
    return torch.stack([torch.randn(shape, generator=g) for g in generators])


@torch.no_grad()
def ddim_sample(
    model: UNet2DModel,
    train_scheduler: DDPMScheduler,
    seeds: np.ndarray,
    ddim: DdimSettings = DdimSettings(),
    *,
    progress: IO[str] | None = None,
    trajectory: bool = False,
) -> dict[str, np.ndarray]:
    """Generate one image per seed; returns ``images`` float32 [n,C,H,W] in [-1,1].

    With ``trajectory=True`` also returns ``x0_trajectory`` [n, steps, C, H, W]: the predicted
    clean sample at every DDIM step (for Journey-TRAK features) and ``trajectory_timesteps``.
    """
    steps, eta, batch_size = ddim.steps, ddim.eta, ddim.batch_size
    device = next(model.parameters()).device
    scheduler = ddim_scheduler(train_scheduler)
    scheduler.set_timesteps(steps)
    config = model.config
    shape = (config.in_channels, config.sample_size, config.sample_size)
    images, trajectories = [], []
    bar = tqdm(total=len(seeds), desc="generate", file=progress, disable=progress is None)
    for start in range(0, len(seeds), batch_size):
        chunk = seeds[start : start + batch_size]
        generators = sample_generators(chunk)
        x = initial_noise(generators, shape).to(device)
        x0_steps = []
        for t in scheduler.timesteps:
            eps = model(x, t).sample
            out = scheduler.step(eps, t, x, eta=eta, generator=generators)
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


def assign_prompts(num_samples: int, prompts: Sequence[str]) -> list[str]:
    """One prompt per sample: ``prompts`` in contiguous blocks of (nearly) equal size.

    Two prompts for 1000 samples give 500 + 500 (the reference's ArtBench-2 layout); a list as
    long as the number of samples gives each sample its own prompt.
    """
    prompts = [str(p) for p in prompts]
    if not prompts:
        raise ConfigError("generation.prompts is empty; give at least one prompt")
    if len(prompts) > num_samples:
        raise ConfigError(
            f"generation.prompts has {len(prompts)} prompts for only {num_samples} samples "
            "(generation.num_samples); every prompt needs at least one sample"
        )
    bounds = np.linspace(0, num_samples, len(prompts) + 1).round().astype(int)
    return [
        p for p, lo, hi in zip(prompts, bounds[:-1], bounds[1:], strict=True) for _ in range(lo, hi)
    ]


def generate(
    model: DiffusionModel,
    seeds: np.ndarray,
    ddim: DdimSettings = DdimSettings(),
    prompts: Sequence[str] | None = None,
    *,
    progress: IO[str] | None = None,
    trajectory: bool = False,
) -> dict[str, np.ndarray]:
    """Generate one image per seed with any model kind (``prompts``: one per seed, or None).

    Returns ``images`` float32 [n, C, H, W] in [-1, 1]; with ``trajectory=True`` also
    ``x0_trajectory`` (predicted x0 per step: clamped pixels, or unclamped latents) and
    ``trajectory_timesteps``.
    """
    if not model.conditional:
        if prompts is not None:
            raise ConfigError(
                f"prompts were given, but a {model.kind} model is unconditional; "
                "set generation.prompts to null"
            )
        return ddim_sample(
            model.denoiser, model.scheduler, seeds, ddim, progress=progress, trajectory=trajectory
        )
    if prompts is None or len(prompts) != len(seeds):
        raise ConfigError(
            f"a {model.kind} model needs one prompt per sample: {len(seeds)} seeds, "
            f"{'no' if prompts is None else len(prompts)} prompts"
        )
    if ddim.guidance_scale is None:
        raise ConfigError(f"a {model.kind} model needs a guidance scale; it is None")
    return _guided_ddim_sample(model, seeds, list(prompts), ddim, progress, trajectory)


@torch.no_grad()
def _guided_ddim_sample(
    model: DiffusionModel,
    seeds: np.ndarray,
    prompts: list[str],
    ddim: DdimSettings,
    progress: IO[str] | None,
    trajectory: bool,
) -> dict[str, np.ndarray]:
    steps, batch_size = ddim.steps, ddim.batch_size
    eta, guidance_scale = ddim.eta, ddim.guidance_scale
    device = model.device
    scheduler = ddim_scheduler(model.scheduler)
    scheduler.set_timesteps(steps)
    guided = guidance_scale != 1.0
    empty = model.condition([""])
    model.denoiser.eval()
    images, trajectories = [], []
    bar = tqdm(total=len(seeds), desc="generate", file=progress, disable=progress is None)
    for start in range(0, len(seeds), batch_size):
        chunk = seeds[start : start + batch_size]
        n = len(chunk)
        generators = sample_generators(chunk)
        x = initial_noise(generators, model.sample_shape).to(device) * scheduler.init_noise_sigma
        cond = model.condition(prompts[start : start + n])
        if guided:
            cond = torch.cat([empty.expand(n, -1, -1), cond])
        cond = cond.to(device)
        x0_steps = []
        for t in scheduler.timesteps:
            latent_in = torch.cat([x, x]) if guided else x
            eps = model.denoiser(latent_in, t, encoder_hidden_states=cond).sample.float()
            if guided:
                eps_empty, eps_prompt = eps.chunk(2)
                eps = eps_empty + guidance_scale * (eps_prompt - eps_empty)
            out = scheduler.step(eps, t, x, eta=eta, generator=generators)
            x = out.prev_sample
            if trajectory:
                x0_steps.append(out.pred_original_sample.cpu())
        images.append(model.decode(x).cpu())
        if trajectory:
            trajectories.append(torch.stack(x0_steps, dim=1))
        bar.update(n)
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
    for i, image in enumerate(channels_last(images)):
        r, c = divmod(i, columns)
        grid[r * height : (r + 1) * height, c * width : (c + 1) * width] = image
    return grid[..., 0] if channels == 1 else grid
