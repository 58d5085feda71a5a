"""The main run's intermediate checkpoints, used by TracIn and GAS (protocol §5, ``01_tracin``).

``train_main`` saves the model after 25, 50 and 75% of its optimisation steps, besides the final
model (100%). Snakemake deletes declared outputs before a job starts, so the snapshots are first
written to a staging folder outside the outputs (next to the resume checkpoint): a killed job that
resumes past a snapshot's step still finds it there. They are moved into place after training.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

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
