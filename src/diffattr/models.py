"""Build, save and load diffusion models.

A model directory is a diffusers ``DDPMPipeline`` layout (``model_index.json``, ``unet/``,
``scheduler/``) written with ``save_pretrained`` (safetensors), so users can open it with
``DDPMPipeline.from_pretrained``. The architecture comes from the config's ``model.unet`` block,
passed to :class:`diffusers.UNet2DModel`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

from diffattr.errors import ConfigError, CorruptFileError
from diffattr.store import atomic_dir


def build_unet(unet_config: dict[str, Any], dropout: float = 0.0) -> UNet2DModel:
    """A randomly initialised UNet2DModel from a config block; every ``nn.Dropout`` set to ``dropout``.

    The reference code forces p=0.1 on every dropout module (resnets and attention alike), which
    ``UNet2DModel(dropout=...)`` alone does not reach; we do the same explicitly.
    """
    try:
        model = UNet2DModel(**unet_config)
    except TypeError as error:
        raise ConfigError(
            f"model.unet: {error}; see diffusers.UNet2DModel for valid keys"
        ) from error
    set_dropout(model, dropout)
    return model


def set_dropout(model: torch.nn.Module, p: float) -> None:
    if not 0.0 <= p < 1.0:
        raise ConfigError(f"model.dropout = {p} is invalid; it must lie in [0, 1)")
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = p


def build_scheduler(scheduler_config: dict[str, Any]) -> DDPMScheduler:
    """The training noise schedule (linear β, ε-prediction by default)."""
    return DDPMScheduler(**scheduler_config)


def save_model(model: UNet2DModel, scheduler: DDPMScheduler, path: str | os.PathLike) -> None:
    """Save atomically as a DDPMPipeline directory (safetensors weights)."""
    with atomic_dir(path) as tmp:
        DDPMPipeline(unet=model, scheduler=scheduler).save_pretrained(tmp, safe_serialization=True)


def load_model(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[UNet2DModel, DDPMScheduler]:
    """Load a saved model directory; eval mode, on ``device``."""
    path = Path(path)
    if not (path / "unet").is_dir() or not (path / "scheduler").is_dir():
        raise CorruptFileError(
            f"{path}: not a diffattr model directory (expected unet/ and scheduler/ inside)"
        )
    model = UNet2DModel.from_pretrained(path / "unet").to(device)
    model.eval()
    scheduler = DDPMScheduler.from_pretrained(path / "scheduler")
    return model, scheduler


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present; an explicit device that is absent is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device = {name!r} but no CUDA device is available; use 'auto' or 'cpu'")
    return torch.device(name)
