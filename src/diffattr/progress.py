"""Progress reporting: tqdm bars in a job's log, and one status line per finished job.

Long loops (training, generation, measurement, features, scoring) draw a tqdm bar on the stream
their job passes as ``progress`` (the job's log file under Snakemake). When a job finishes,
:func:`diffattr.jobs.common.job_logging` prints one line on the terminal (the job's own stderr, which
Snakemake passes through, also with ``--quiet``), for example::

    [diffattr] done train_subset lds/3/seed0 in 41.2s: 240 steps, final loss 0.0318

The text after the colon is the last message a job sent through :func:`status`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from diffattr.errors import ConfigError

STATUS_LOGGER = "diffattr.status"

ProgressUpdate = Callable[[int], None]


def status(message: str, *args: Any) -> None:
    """Record a job's one-line result (also written to its log)."""
    logging.getLogger(STATUS_LOGGER).info(message, *args)


class StatusCollector(logging.Handler):
    """Keeps the last :func:`status` message of the running job."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.message: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.message = record.getMessage()


def job_name(log_path: str | os.PathLike) -> str:
    """``logs/<experiment>/train_subset/lds/3/seed0.log`` -> ``train_subset lds/3/seed0``."""
    parts = list(Path(log_path).with_suffix("").parts)
    if "logs" in parts:
        parts = parts[parts.index("logs") + 2 :] or parts[-1:]
    else:
        parts = parts[-2:]
    return " ".join([parts[0], "/".join(parts[1:])]).strip()


def status_line(log_path: str | os.PathLike, seconds: float, message: str | None) -> str:
    line = f"[diffattr] done {job_name(log_path)} in {seconds:.1f}s"
    return f"{line}: {message}" if message else line


def progress_bar(
    progress: Callable[[int, int], Any] | Any | None, total: int, desc: str, unit: str = "it"
) -> tuple[ProgressUpdate, Callable[[], None]]:
    """(update(done), close()) for ``progress``: None, a callback ``progress(done, total)``, or a
    text stream that gets a tqdm bar (updated at most every few seconds)."""
    if progress is None:
        return (lambda done: None), (lambda: None)
    if hasattr(progress, "write"):
        from tqdm import tqdm

        bar = tqdm(total=total, file=progress, unit=unit, desc=desc, mininterval=5)

        def update(done: int) -> None:
            bar.update(done - bar.n)

        return update, bar.close
    if callable(progress):
        return (lambda done: progress(done, total)), (lambda: None)
    raise ConfigError(
        f"progress must be None, a callable(done, total) or a writable stream, got {progress!r}"
    )
