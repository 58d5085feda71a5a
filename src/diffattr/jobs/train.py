"""Jobs of ``rules/train.smk``: the main model with its snapshots (``train_main``) and the
models trained on a subset of the train split (``train_subset``; :func:`train_model` also
serves ``train_counterfactual`` in ``rules/counterfactual.smk``)."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from diffattr import data
from diffattr.errors import ConfigError, TrainingError
from diffattr.progress import status

logger = logging.getLogger("diffattr")


def train_model(
    dataset_path: str,
    out_dir: str,
    checkpoint_dir: str,
    model_cfg: dict[str, Any],
    scheduler_cfg: dict[str, Any],
    training_cfg: dict[str, Any],
    seed: int,
    device: str,
    subset_path: str | None = None,
    snapshot_dirs: dict[int, str] | None = None,
    progress: IO[str] | None = None,
) -> dict[str, Any]:
    """Train on the whole train split, or on the rows of ``subset_path``.

    ``model_cfg["kind"]`` picks the model (``unet``, or ``sd_lora``: LoRA on a Stable Diffusion
    base, conditioned on the split's captions); only the trained weights are saved.
    """
    import torch

    from diffattr.models import build_model, resolve_device
    from diffattr.training import TrainingSettings, train_diffusion_model

    train = data.load_split(dataset_path, "train")
    images, captions = train.images, train.captions
    if subset_path is not None:
        positions = data.read_subset(subset_path)
        images = images[positions]
        captions = None if captions is None else [captions[p] for p in positions]
    values = {k: v for k, v in training_cfg.items() if k != "main_seed"}
    settings = TrainingSettings.from_dict(values, seed=int(seed), device=device)
    torch.manual_seed(settings.seed)  # the initial weights (the adapters' for sd_lora)
    model = build_model(model_cfg, scheduler_cfg, resolve_device(settings.device))
    stats = train_diffusion_model(
        model,
        images,
        settings,
        out_dir,
        checkpoint_dir,
        captions=captions,
        snapshots=snapshot_dirs,
        progress=progress,
    )
    logger.info("trained %s: %s", out_dir, stats)
    status("%s steps, final loss %.4g", stats["steps"], stats.get("final_loss", np.nan))
    return stats


def train_main(
    dataset_path: str,
    out_dir: str,
    snapshot_dirs: Sequence[str],
    steps: Sequence[int],
    staging_dir: str,
    checkpoint_dir: str,
    model_cfg: dict[str, Any],
    scheduler_cfg: dict[str, Any],
    training_cfg: dict[str, Any],
    seed: int,
    device: str,
    progress: IO[str] | None = None,
) -> dict[str, Any]:
    """Train the main model (:func:`train_model`) and save its snapshots."""
    if len(snapshot_dirs) != len(steps):
        raise ConfigError(f"{len(snapshot_dirs)} snapshot folders for {len(steps)} steps {steps}")
    staged = {int(step): str(Path(staging_dir) / f"step{int(step)}") for step in steps}
    stats = train_model(
        dataset_path,
        out_dir,
        checkpoint_dir,
        model_cfg,
        scheduler_cfg,
        training_cfg,
        seed,
        device,
        snapshot_dirs=staged,
        progress=progress,
    )
    missing = [step for step, path in staged.items() if not Path(path).is_dir()]
    if missing:
        raise TrainingError(
            f"training finished without the snapshots at steps {missing} (of "
            f"{stats.get('total_steps')} steps) in {staging_dir}; delete {checkpoint_dir} and "
            "rerun train_main to train from the start"
        )
    for index, (step, target) in enumerate(zip(steps, snapshot_dirs, strict=True)):
        target = Path(target)
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        reused = int(step) in [int(later) for later in steps[index + 1 :]]
        (shutil.copytree if reused else shutil.move)(staged[int(step)], target)
    shutil.rmtree(staging_dir, ignore_errors=True)
    return stats
