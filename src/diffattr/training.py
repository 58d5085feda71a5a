"""Resumable, deterministic training of a diffusion model on one set of training rows.

Every random choice of step ``s`` (batch order, flips, timesteps, noise, dropout) is drawn from
generators seeded by ``(seed, s)``, so the run is a pure function of (data, settings, seed): a
job killed at any point and resumed from its last checkpoint ends with the same weights as an
uninterrupted run (bit-identical on CPU). Checkpoints live outside the declared outputs and are
removed after success.

The loop is the same for every model kind (:class:`diffattr.models.DiffusionModel`); only the
batches differ. A pixel model trains on flipped images. A latent model (Stable Diffusion + LoRA)
trains on a sample of the VAE posterior of the flipped image, with its caption, which is replaced
by the empty caption with probability ``caption_dropout`` (for classifier-free guidance). Half
precision (``mixed_precision``: fp16 or bf16) casts the frozen weights and autocasts the forward
pass; it needs a CUDA device.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from tqdm import tqdm

from diffattr.diffusers_imports import get_cosine_schedule_with_warmup
from diffattr.errors import ConfigError, TrainingError
from diffattr.models import (
    DiffusionModel,
    build_scheduler,
    build_unet,
    precision_dtype,
    resolve_device,
)
from diffattr.settings import TrainingSettings
from diffattr.store import atomic_path

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingRun:
    """Where one training run writes: the final model (``out_dir``), its resume checkpoint
    (``checkpoint_dir``, removed after success), the ``snapshots`` (a step count -> the folder
    where the model is saved after that many steps, e.g. the 25/50/75% checkpoints that TracIn
    uses) and the progress stream. ``stop_after`` stops the run after that many steps without
    saving the final model (tests simulate a killed job with it)."""

    out_dir: str | os.PathLike
    checkpoint_dir: str | os.PathLike
    snapshots: Mapping[int, str | os.PathLike] | None = None
    progress: IO[str] | None = field(default=None, compare=False, repr=False)
    stop_after: int | None = None

    def __post_init__(self) -> None:
        if self.stop_after is not None and (
            isinstance(self.stop_after, bool)
            or not isinstance(self.stop_after, int)
            or self.stop_after < 1
        ):
            raise ConfigError(
                f"TrainingRun.stop_after = {self.stop_after!r} is not valid; expected None "
                "or an integer >= 1"
            )


def steps_per_epoch(n_rows: int, batch_size: int) -> int:
    return math.ceil(n_rows / batch_size)


def step_seed(seed: int, step: int) -> int:
    """A 63-bit seed for step ``step`` of a run seeded ``seed``."""
    return int(np.random.SeedSequence([seed, step]).generate_state(1, dtype=np.uint64)[0] >> 1)


def batch_rows(n_rows: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Rows of step ``step``: epoch-wise shuffles, each a pure function of (seed, epoch)."""
    per_epoch = steps_per_epoch(n_rows, batch_size)
    epoch, position = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch, 0x5EED]).permutation(n_rows)
    return order[position * batch_size : (position + 1) * batch_size]


def _fingerprint(settings: TrainingSettings, model: DiffusionModel, n: int) -> str:
    values = dataclasses.asdict(settings)
    if not values["ema_decay"]:
        del values["ema_decay"]  # settings without EMA keep the fingerprint they had before it
    blob = json.dumps([values, model.describe(), n], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def train_model(
    images: np.ndarray,
    settings: TrainingSettings,
    unet_config: dict[str, Any],
    scheduler_config: dict[str, Any],
    run: TrainingRun,
    dropout: float = 0.0,
) -> dict[str, Any]:
    """Train a UNet on ``images`` (float32 [n,C,H,W] in [-1, 1]); ``run`` says where it writes.

    Returns a small dict of statistics (steps, final loss).
    """
    device = resolve_device(settings.device)
    torch.manual_seed(settings.seed)
    model = DiffusionModel(
        build_unet(unet_config, dropout).to(device), build_scheduler(scheduler_config)
    )
    return train_diffusion_model(model, images, settings, run)


def train_diffusion_model(
    model: DiffusionModel,
    images: np.ndarray,
    settings: TrainingSettings,
    run: TrainingRun,
    captions: list[str] | None = None,
) -> dict[str, Any]:
    """Train ``model`` (freshly built, on its device) on ``images`` and save it to
    ``run.out_dir``.

    ``captions`` (one per image) condition a conditional model. Other arguments as
    :func:`train_model`.
    """
    device = model.device
    dtype = precision_dtype(settings.mixed_precision, device)
    n_rows = len(images)
    if n_rows == 0:
        raise ConfigError("cannot train on an empty set of training rows")
    per_epoch = steps_per_epoch(n_rows, settings.batch_size)
    total = settings.epochs * per_epoch
    warmup = math.ceil(settings.warmup_fraction * total)

    if dtype != torch.float32:
        model.cast_frozen(dtype)
    if model.uses_latents:
        batches: Batches = LatentBatches(model, images, captions, settings)
    else:
        batches = PixelBatches(images, settings)
    parameters = list(model.trainable_parameters().values())
    optimizer = torch.optim.AdamW(
        parameters,
        lr=settings.lr,
        betas=(settings.adam_beta1, settings.adam_beta2),
        weight_decay=settings.weight_decay,
        eps=settings.adam_eps,
    )
    lr_schedule = get_cosine_schedule_with_warmup(optimizer, warmup, total)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    alphas = model.scheduler.alphas_cumprod.to(device)

    ema = ExponentialAverage(model.trainable_parameters(), settings.ema_decay)
    checkpoint = Checkpointer(Path(run.checkpoint_dir), _fingerprint(settings, model, n_rows))
    start = checkpoint.restore(model, optimizer, lr_schedule, scaler, ema)
    if start:
        logger.info("resuming from step %d of %d", start, total)

    model.denoiser.train()
    bar = tqdm(
        total=total,
        initial=start,
        desc="train",
        file=run.progress,
        mininterval=5,
        disable=run.progress is None,
    )
    step_state = _StepState(model, optimizer, lr_schedule, scaler, alphas, dtype, parameters)
    last_loss = float("nan")
    for step in range(start, total):
        try:
            loss = _train_step(step_state, batches, settings, step, n_rows)
        except _NonFiniteLoss as bad:
            checkpoint.save(model, optimizer, lr_schedule, step, scaler, ema)
            raise TrainingError(
                f"training loss became {bad.value} at step {step} of {total}; stopped before "
                f"applying it. The state before that step is kept in {checkpoint.directory}. "
                "Lower training.lr or check the data, then rerun to resume."
            ) from None
        last_loss = loss
        ema.update(step)
        done = step + 1
        bar.update(1)
        if done % 50 == 0 or done == total:
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr_schedule.get_last_lr()[0]:.2e}")
        if run.snapshots and done in run.snapshots:
            with ema.swapped_in():
                model.save(run.snapshots[done], ema.record(done))
        if settings.checkpoint_every and done % settings.checkpoint_every == 0 and done < total:
            checkpoint.save(model, optimizer, lr_schedule, done, scaler, ema)
        if run.stop_after is not None and done >= run.stop_after:
            bar.close()
            return {"steps": done, "total_steps": total, "stopped_early": True}
    bar.close()
    model.denoiser.eval()
    with ema.swapped_in():
        model.save(run.out_dir, ema.record(total))
    checkpoint.clear()
    return {"steps": total, "total_steps": total, "final_loss": last_loss, "n_rows": n_rows}


class Batches:
    """The clean samples x0 (and conditions) of one step, drawn from the step's generator."""

    def batch(
        self, rows: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError


class PixelBatches(Batches):
    def __init__(self, images: np.ndarray, settings: TrainingSettings) -> None:
        self.images = torch.as_tensor(np.asarray(images, dtype=np.float32))
        self.random_flip = settings.random_flip

    def batch(self, rows, generator):
        x0 = self.images[rows]
        if self.random_flip:
            flip = torch.rand(len(rows), generator=generator) < 0.5
            x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
        return x0, None


class LatentBatches(Batches):
    """VAE posterior samples of (possibly flipped) images, and caption embeddings.

    The posterior of every image and of its mirror image is computed once; a step then draws
    ``mean + std * ε`` (what ``latent_dist.sample()`` computes) from the step's generator.
    Embeddings of the distinct captions and of the empty caption are computed once as well.
    """

    def __init__(
        self,
        model: DiffusionModel,
        images: np.ndarray,
        captions: list[str] | None,
        settings: TrainingSettings,
    ) -> None:
        if model.conditional and (captions is None or len(captions) != len(images)):
            raise ConfigError(
                f"a {model.kind} model trains on captioned images, but "
                f"{'no' if captions is None else len(captions)} captions came with "
                f"{len(images)} images; set data.caption_template (or data.caption_column)"
            )
        self.random_flip = settings.random_flip
        self.caption_dropout = settings.caption_dropout if model.conditional else 0.0
        self.scale = model.latent_scale
        images = np.asarray(images, dtype=np.float32)
        self.mean, self.std = model.latent_distribution(images, settings.batch_size)
        _check_latent_shape(model, tuple(self.mean.shape[1:]), images.shape[-1])
        if self.random_flip:
            flipped = model.latent_distribution(images[..., ::-1].copy(), settings.batch_size)
            self.mean = torch.stack([self.mean, flipped[0]], dim=1)
            self.std = torch.stack([self.std, flipped[1]], dim=1)
        self.embeddings = None
        if model.conditional:
            texts = sorted(set(captions))
            self.embeddings = model.condition(["", *texts])
            lookup = {text: i + 1 for i, text in enumerate(texts)}
            self.caption_index = torch.tensor([lookup[c] for c in captions])

    def batch(self, rows, generator):
        n = len(rows)
        if self.random_flip:
            flip = (torch.rand(n, generator=generator) < 0.5).long()
            mean, std = self.mean[rows, flip], self.std[rows, flip]
        else:
            mean, std = self.mean[rows], self.std[rows]
        cond = None
        if self.embeddings is not None:
            index = self.caption_index[rows]
            if self.caption_dropout > 0:
                dropped = torch.rand(n, generator=generator) < self.caption_dropout
                index = torch.where(dropped, torch.zeros_like(index), index)
            cond = self.embeddings[index]
        eps = torch.randn(mean.shape, generator=generator)
        return (mean + std * eps) * self.scale, cond


def _check_latent_shape(model: DiffusionModel, shape: tuple[int, ...], resolution: int) -> None:
    if shape != tuple(model.sample_shape):
        expected = model.sample_shape[-1] * getattr(model, "vae_scale_factor", 1)
        raise ConfigError(
            f"data.resolution = {resolution} gives latents of shape {list(shape)}, but the "
            f"denoiser of this {model.kind} model expects {list(model.sample_shape)}; "
            f"set data.resolution to {expected}"
        )


@dataclass
class _StepState:
    model: DiffusionModel
    optimizer: torch.optim.Optimizer
    lr_schedule: Any
    scaler: Any
    alphas_cumprod: torch.Tensor
    dtype: torch.dtype
    parameters: list[torch.nn.Parameter]


def _train_step(
    state: _StepState, batches: Batches, settings: TrainingSettings, step: int, n_rows: int
) -> float:
    model, device = state.model, state.model.device
    seed = step_seed(settings.seed, step)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # dropout draws from the global generator
    rows = torch.as_tensor(batch_rows(n_rows, settings.batch_size, settings.seed, step))
    x0, cond = batches.batch(rows, generator)
    timesteps = torch.randint(0, len(state.alphas_cumprod), (len(rows),), generator=generator)
    noise = torch.randn(x0.shape, generator=generator)
    x0, noise, timesteps = x0.to(device), noise.to(device), timesteps.to(device)
    alpha_bar = state.alphas_cumprod[timesteps].view(-1, 1, 1, 1)
    noisy = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise
    kwargs = {} if cond is None else {"encoder_hidden_states": cond.to(device)}
    with torch.autocast(device.type, state.dtype, enabled=state.dtype != torch.float32):
        prediction = model.denoiser(noisy, timesteps, **kwargs).sample
    loss = torch.nn.functional.mse_loss(prediction.float(), noise.float())
    if not torch.isfinite(loss):
        raise _NonFiniteLoss(float(loss.detach()))
    state.optimizer.zero_grad(set_to_none=True)
    if state.scaler is not None:
        state.scaler.scale(loss).backward()
        state.scaler.unscale_(state.optimizer)
    else:
        loss.backward()
    if settings.max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(state.parameters, settings.max_grad_norm)
    if state.scaler is not None:
        state.scaler.step(state.optimizer)
        state.scaler.update()
    else:
        state.optimizer.step()
    state.lr_schedule.step()
    return float(loss.detach())


class _NonFiniteLoss(Exception):
    def __init__(self, value: float) -> None:
        super().__init__(value)
        self.value = value


class ExponentialAverage:
    """Exponential moving average of the trainable parameters (``decay`` 0: none).

    After step t (0-based) the average moves with weight 1 − d, d = min(decay, (1 + t)/(10 + t))
    (the warm-up of diffusers' EMAModel), so early steps do not freeze the random start in.
    A model trained with EMA is saved with the averaged weights — for sampling, measurement and
    features alike — and says so in its ``diffattr_training.json``.
    """

    def __init__(self, parameters: dict[str, torch.nn.Parameter], decay: float) -> None:
        self.parameters = parameters
        self.decay = float(decay)
        self.average = (
            {n: p.detach().clone() for n, p in parameters.items()} if self.decay else None
        )

    def update(self, step: int) -> None:
        if self.average is None:
            return
        weight = min(self.decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for name, parameter in self.parameters.items():
                self.average[name].mul_(weight).add_(parameter.detach(), alpha=1 - weight)

    @contextlib.contextmanager
    def swapped_in(self) -> Iterator[None]:
        """The averaged weights in the model for the duration (no-op without EMA)."""
        if self.average is None:
            yield
            return
        kept = {n: p.detach().clone() for n, p in self.parameters.items()}
        with torch.no_grad():
            for name, parameter in self.parameters.items():
                parameter.copy_(self.average[name])
        try:
            yield
        finally:
            with torch.no_grad():
                for name, parameter in self.parameters.items():
                    parameter.copy_(kept[name])

    def record(self, steps: int) -> dict[str, Any]:
        """The provenance of the saved weights."""
        if self.average is None:
            return {"weights": "last step", "steps": steps}
        return {"weights": "ema", "ema_decay": self.decay, "steps": steps}

    def state_dict(self) -> dict[str, torch.Tensor] | None:
        return None if self.average is None else dict(self.average)

    def load_state_dict(self, state: dict[str, torch.Tensor] | None) -> None:
        if self.average is None:
            return
        if state is None or set(state) != set(self.average):
            raise TrainingError("the checkpoint holds no EMA weights for this model")
        with torch.no_grad():
            for name, value in state.items():
                self.average[name].copy_(value)


class Checkpointer:
    """Saves and restores the full training state in a directory outside the declared outputs."""

    FILE = "state.pt"

    def __init__(self, directory: Path, fingerprint: str) -> None:
        self.directory = directory
        self.fingerprint = fingerprint
        self.saved_step = 0

    def save(
        self,
        model: DiffusionModel,
        optimizer: Any,
        lr_schedule: Any,
        step: int,
        scaler: Any = None,
        ema: ExponentialAverage | None = None,
    ) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        state = {
            "fingerprint": self.fingerprint,
            "step": step,
            "model": model.training_state(),
            "optimizer": optimizer.state_dict(),
            "lr_schedule": lr_schedule.state_dict(),
            "scaler": None if scaler is None else scaler.state_dict(),
            "ema": None if ema is None else ema.state_dict(),
        }
        with atomic_path(self.directory / self.FILE, suffix=".pt") as tmp:
            torch.save(state, tmp)
        self.saved_step = step

    def restore(
        self,
        model: DiffusionModel,
        optimizer: Any,
        lr_schedule: Any,
        scaler: Any = None,
        ema: ExponentialAverage | None = None,
    ) -> int:
        path = self.directory / self.FILE
        if not path.exists():
            return 0
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # a checkpoint cut short by a kill: start over
            logger.warning("ignoring unreadable checkpoint %s (%s)", path, error)
            return 0
        if state.get("fingerprint") != self.fingerprint:
            logger.warning("ignoring checkpoint %s from different settings", path)
            return 0
        model.load_training_state(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        lr_schedule.load_state_dict(state["lr_schedule"])
        if scaler is not None and state.get("scaler") is not None:
            scaler.load_state_dict(state["scaler"])
        if ema is not None:
            ema.load_state_dict(state.get("ema"))
        self.saved_step = int(state["step"])
        return self.saved_step

    def clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
