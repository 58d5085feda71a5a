"""The environment the workflow's jobs inherit: this checkout's ``src/`` first on PYTHONPATH.

The Snakefile puts ``src/`` on its own ``sys.path`` (so that Snakemake itself imports diffattr
from the checkout, installed or not) and calls :func:`use_source_tree`, so that every job (a
local ``script:``, a job under ``--sdm conda``, a SLURM job step, which all inherit the
environment of the Snakemake process) imports the same code, never a stale install.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path


def use_source_tree(src: str | Path, environ: MutableMapping[str, str] | None = None) -> str:
    """Prepend ``src`` to PYTHONPATH in ``environ`` (default: this process's environment),
    dropping an earlier copy of it; keep the user's other entries in order. Returns the value."""
    environ = os.environ if environ is None else environ
    src = os.fspath(src)
    rest = [p for p in environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != src]
    environ["PYTHONPATH"] = os.pathsep.join([src, *rest])
    return environ["PYTHONPATH"]
