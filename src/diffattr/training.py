"""Resumable, deterministic training of a diffusion model on one set of training rows.

Every random choice of step ``s`` (batch order, flips, timesteps, noise, dropout) is drawn from
generators seeded by ``(seed, s)``, so the run is a pure function of (data, settings, seed): a
job killed at any point and resumed from its last checkpoint ends with the same weights as an
uninterrupted run (bit-identical on CPU). Checkpoints live outside the declared outputs and are
removed after success.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from diffusers.optimization import get_cosine_schedule_with_warmup
from tqdm import tqdm

from diffattr.errors import ConfigError, TrainingError
from diffattr.models import build_scheduler, build_unet, resolve_device, save_model
from diffattr.store import atomic_path

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingSettings:
    """Optimisation hyperparameters (the paper's CIFAR values are in experiments/cifar2.yaml)."""

    epochs: int
    batch_size: int
    lr: float = 1e-4
    adam_beta1: float = 0.95
    adam_beta2: float = 0.999
    weight_decay: float = 1e-6
    adam_eps: float = 1e-8
    max_grad_norm: float = 1.0
    warmup_fraction: float = 0.1
    random_flip: bool = True
    seed: int = 42
    checkpoint_every: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"training.{name} = {getattr(self, name)} must be at least 1")
        if self.lr <= 0:
            raise ConfigError(f"training.lr = {self.lr} must be positive")
        if not 0 <= self.warmup_fraction < 1:
            raise ConfigError(
                f"training.warmup_fraction = {self.warmup_fraction} must lie in [0, 1)"
            )

    @classmethod
    def from_dict(cls, values: dict[str, Any], **overrides: Any) -> TrainingSettings:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown training settings {unknown}; valid: {sorted(known)}")
        return cls(**{**values, **overrides})


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


def _fingerprint(
    settings: TrainingSettings, unet_config: dict, scheduler_config: dict, n: int
) -> str:
    blob = json.dumps(
        [dataclasses.asdict(settings), unet_config, scheduler_config, n],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def train_model(
    images: np.ndarray,
    settings: TrainingSettings,
    unet_config: dict[str, Any],
    scheduler_config: dict[str, Any],
    out_dir: str | os.PathLike,
    checkpoint_dir: str | os.PathLike,
    dropout: float = 0.0,
    snapshots: dict[int, str | os.PathLike] | None = None,
    progress: IO[str] | None = None,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Train a UNet on ``images`` (float32 [n,C,H,W] in [-1, 1]) and save it to ``out_dir``.

    ``snapshots`` maps a step count to a directory where the model is saved after that many
    steps (e.g. the 25/50/75% checkpoints that TracIn uses). ``stop_after`` stops early without
    saving the final model (used by tests to simulate a killed job).
    Returns a small dict of statistics (steps, final loss).
    """
    device = resolve_device(settings.device)
    images_t = torch.as_tensor(np.asarray(images, dtype=np.float32))
    n_rows = images_t.shape[0]
    if n_rows == 0:
        raise ConfigError("cannot train on an empty set of training rows")
    per_epoch = steps_per_epoch(n_rows, settings.batch_size)
    total = settings.epochs * per_epoch
    warmup = math.ceil(settings.warmup_fraction * total)

    torch.manual_seed(settings.seed)
    model = build_unet(unet_config, dropout).to(device)
    scheduler = build_scheduler(scheduler_config)
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=settings.lr,
        betas=(settings.adam_beta1, settings.adam_beta2),
        weight_decay=settings.weight_decay,
        eps=settings.adam_eps,
    )
    lr_schedule = get_cosine_schedule_with_warmup(optimizer, warmup, total)
    alphas = scheduler.alphas_cumprod.to(device)

    checkpoint = Checkpointer(
        Path(checkpoint_dir), _fingerprint(settings, unet_config, scheduler_config, n_rows)
    )
    start = checkpoint.restore(model, optimizer, lr_schedule)
    if start:
        logger.info("resuming from step %d of %d", start, total)

    model.train()
    bar = tqdm(
        total=total,
        initial=start,
        desc="train",
        file=progress,
        mininterval=5,
        disable=progress is None,
    )
    last_loss = float("nan")
    for step in range(start, total):
        try:
            loss = _train_step(
                model, optimizer, lr_schedule, images_t, alphas, settings, step, n_rows, device
            )
        except _NonFiniteLoss as bad:
            checkpoint.save(model, optimizer, lr_schedule, step)
            raise TrainingError(
                f"training loss became {bad.value} at step {step} of {total}; stopped before "
                f"applying it. The state before that step is kept in {checkpoint.directory}. "
                "Lower training.lr or check the data, then rerun to resume."
            ) from None
        last_loss = loss
        done = step + 1
        bar.update(1)
        if done % 50 == 0 or done == total:
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr_schedule.get_last_lr()[0]:.2e}")
        if snapshots and done in snapshots:
            save_model(model, scheduler, snapshots[done])
        if settings.checkpoint_every and done % settings.checkpoint_every == 0 and done < total:
            checkpoint.save(model, optimizer, lr_schedule, done)
        if stop_after is not None and done >= stop_after:
            bar.close()
            return {"steps": done, "total_steps": total, "stopped_early": True}
    bar.close()
    model.eval()
    save_model(model, scheduler, out_dir)
    checkpoint.clear()
    return {"steps": total, "total_steps": total, "final_loss": last_loss, "n_rows": n_rows}


def _train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    lr_schedule: Any,
    images: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    settings: TrainingSettings,
    step: int,
    n_rows: int,
    device: torch.device,
) -> float:
    seed = step_seed(settings.seed, step)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # dropout draws from the global generator
    rows = torch.as_tensor(batch_rows(n_rows, settings.batch_size, settings.seed, step))
    x0 = images[rows]
    if settings.random_flip:
        flip = torch.rand(len(rows), generator=generator) < 0.5
        x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
    timesteps = torch.randint(0, len(alphas_cumprod), (len(rows),), generator=generator)
    noise = torch.randn(x0.shape, generator=generator)
    x0, noise, timesteps = x0.to(device), noise.to(device), timesteps.to(device)
    alpha_bar = alphas_cumprod[timesteps].view(-1, 1, 1, 1)
    noisy = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise
    prediction = model(noisy, timesteps).sample
    loss = torch.nn.functional.mse_loss(prediction.float(), noise.float())
    if not torch.isfinite(loss):
        raise _NonFiniteLoss(float(loss.detach()))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if settings.max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
    optimizer.step()
    lr_schedule.step()
    return float(loss.detach())


class _NonFiniteLoss(Exception):
    def __init__(self, value: float) -> None:
        super().__init__(value)
        self.value = value


class Checkpointer:
    """Saves and restores the full training state in a directory outside the declared outputs."""

    FILE = "state.pt"

    def __init__(self, directory: Path, fingerprint: str) -> None:
        self.directory = directory
        self.fingerprint = fingerprint
        self.saved_step = 0

    def save(self, model: torch.nn.Module, optimizer: Any, lr_schedule: Any, step: int) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        state = {
            "fingerprint": self.fingerprint,
            "step": step,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "lr_schedule": lr_schedule.state_dict(),
        }
        with atomic_path(self.directory / self.FILE, suffix=".pt") as tmp:
            torch.save(state, tmp)
        self.saved_step = step

    def restore(self, model: torch.nn.Module, optimizer: Any, lr_schedule: Any) -> int:
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
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        lr_schedule.load_state_dict(state["lr_schedule"])
        self.saved_step = int(state["step"])
        return self.saved_step

    def clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
