"""Jobs of ``rules/train.smk``: the main model with its snapshots (``train_main``) and the
models trained on a subset of the train split (``train_subset``; :func:`train_model` also
serves ``train_counterfactual`` in ``rules/counterfactual.smk``). Both train through
:func:`_train`."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from diffattr import data
from diffattr.errors import ConfigError, TrainingError
from diffattr.progress import status
from diffattr.settings import TrainingRecipe, TrainingRuntime

if TYPE_CHECKING:
    from diffattr.training import TrainingRun

logger = logging.getLogger("diffattr")


def train_model(
    dataset_path: str,
    subset_path: str | None,
    out_dir: str,
    *,
    settings: TrainingRecipe,
    runtime: TrainingRuntime,
) -> dict[str, Any]:
    """Train on the whole train split (``subset_path`` None), or on the rows of ``subset_path``.

    ``settings.model["kind"]`` picks the model (``unet``, or ``sd_lora``: LoRA on a Stable
    Diffusion base, conditioned on the split's captions); only the trained weights are saved.
    """
    from diffattr.training import TrainingRun

    run = TrainingRun(out_dir, runtime.checkpoint_dir, progress=runtime.progress)
    return _train(dataset_path, subset_path, run, settings)


def train_main(
    dataset_path: str,
    out_dir: str,
    snapshot_dirs: Sequence[str],
    *,
    snapshot_steps: Sequence[int],
    settings: TrainingRecipe,
    runtime: TrainingRuntime,
) -> dict[str, Any]:
    """Train the main model on the whole train split and save its snapshots: the model after
    ``snapshot_steps[i]`` steps goes to ``snapshot_dirs[i]``, staged in
    ``runtime.staging_dir`` during training."""
    from diffattr.training import TrainingRun

    steps, staging_dir, checkpoint_dir = snapshot_steps, runtime.staging_dir, runtime.checkpoint_dir
    if staging_dir is None:
        raise ConfigError("train_main stages its snapshots in runtime.staging_dir; it is None")
    if len(snapshot_dirs) != len(steps):
        raise ConfigError(f"{len(snapshot_dirs)} snapshot folders for {len(steps)} steps {steps}")
    staged = {int(step): str(Path(staging_dir) / f"step{int(step)}") for step in steps}
    run = TrainingRun(out_dir, checkpoint_dir, snapshots=staged, progress=runtime.progress)
    stats = _train(dataset_path, None, run, settings)
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


def _train(
    dataset_path: str, subset_path: str | None, run: TrainingRun, settings: TrainingRecipe
) -> dict[str, Any]:
    """Train ``settings``'s model on the train split (or the rows of ``subset_path``)."""
    import torch

    from diffattr.models import build_model, resolve_device
    from diffattr.training import train_diffusion_model

    train = data.load_split(dataset_path, "train")
    images, captions = train.images, train.captions
    if subset_path is not None:
        positions = data.read_subset(subset_path)
        images = images[positions]
        captions = None if captions is None else [captions[p] for p in positions]
    training = settings.training
    torch.manual_seed(training.seed)  # the initial weights (the adapters' for sd_lora)
    model = build_model(settings.model, settings.scheduler, resolve_device(training.device))
    stats = train_diffusion_model(model, images, training, run, captions=captions)
    logger.info("trained %s: %s", run.out_dir, stats)
    status("%s steps, final loss %.4g", stats["steps"], stats.get("final_loss", np.nan))
    return stats
