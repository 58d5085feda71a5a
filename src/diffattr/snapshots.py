"""The main run's intermediate checkpoints, used by TracIn and GAS (protocol §5, ``01_tracin``).

``train_main`` saves the model after 25, 50 and 75% of its optimisation steps, besides the final
model (100%). Snakemake deletes declared outputs before a job starts, so the snapshots are first
written to a staging folder outside the outputs (next to the resume checkpoint): a killed job that
resumes past a snapshot's step still finds it there. They are moved into place after training.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from diffattr.errors import ConfigError, TrainingError

#: Percent of the main run's steps at which a snapshot is saved (100% is the final model).
SNAPSHOT_PERCENTS = (25, 50, 75)


def run_steps(epochs: int, n_rows: int, batch_size: int) -> int:
    """Optimisation steps of a training run: ``epochs × ⌈n_rows / batch_size⌉``."""
    return int(epochs) * math.ceil(int(n_rows) / int(batch_size))


def snapshot_steps(
    epochs: int, n_rows: int, batch_size: int, percents: Sequence[int] = SNAPSHOT_PERCENTS
) -> list[int]:
    """Optimisation steps at ``percents`` of a run of ``epochs × ⌈n_rows / batch_size⌉`` steps.

    Each is rounded and at least 1; a very short run may give equal steps (the same weights).
    """
    total = run_steps(epochs, n_rows, batch_size)
    return [min(total, max(1, round(total * p / 100))) for p in percents]


def train_main_job(
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
    """Train the main model (:func:`diffattr.jobs.train_job`) and save its snapshots."""
    from diffattr.jobs import train_job

    if len(snapshot_dirs) != len(steps):
        raise ConfigError(f"{len(snapshot_dirs)} snapshot folders for {len(steps)} steps {steps}")
    staged = {int(step): str(Path(staging_dir) / f"step{int(step)}") for step in steps}
    stats = train_job(
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
