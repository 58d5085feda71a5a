"""What every job shares: its logging (:func:`job_logging`, the one context manager every
``scripts/*.py`` opens) and the split names."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from diffattr.progress import STATUS_LOGGER, StatusCollector, status_line

logger = logging.getLogger("diffattr")


def delegate_to_job_server(snakemake: object) -> None:
    """The first call of every ``scripts/*.py``: run the job in the local job server when one
    listens (and exit with its status), else return and run it here (:mod:`diffattr.job_server`)."""
    from diffattr.job_server import delegate

    delegate(snakemake)


@contextlib.contextmanager
def job_logging(log_path: str | os.PathLike | None, threads: int = 1) -> Iterator[IO[str]]:
    """Send this job's logging, warnings, progress bars and tracebacks to its log file; on
    success print one status line on the terminal (see :mod:`diffattr.progress`)."""
    if "torch" in sys.modules or threads > 1:
        import torch

        torch.set_num_threads(max(1, int(threads)))
    if log_path is None:
        yield sys.stderr
        return
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", buffering=1) as stream:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        old_stderr, sys.stderr = sys.stderr, stream
        logging.captureWarnings(True)
        collector = StatusCollector()
        logging.getLogger(STATUS_LOGGER).addHandler(collector)
        started = time.monotonic()
        try:
            yield stream
        except BaseException:
            logger.exception("job failed")
            raise
        else:
            line = status_line(log_path, time.monotonic() - started, collector.message)
            print(line, file=old_stderr, flush=True)
        finally:
            sys.stderr = old_stderr
            root.removeHandler(handler)
            logging.getLogger(STATUS_LOGGER).removeHandler(collector)
