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


#: Set to 1 to make ``device: auto`` / ``cuda`` demand a GPU in any process (e.g. an sbatch
#: script of your own); Snakemake jobs on a cluster are recognised by their ``gpu`` resource.
REQUIRE_GPU_ENV = "DIFFATTR_REQUIRE_GPU"
#: Set by SLURM inside every job allocation.
CLUSTER_JOB_ENV = "SLURM_JOB_ID"


def gpu_requested() -> bool:
    """Whether this process is a job that asked the cluster for a GPU: a Snakemake ``script:``
    job whose rule has ``resources: gpu >= 1`` (Snakemake gives the script a global ``snakemake``
    object in its main module) running inside a SLURM allocation, or any process with
    ``DIFFATTR_REQUIRE_GPU=1``. A local run's ``gpu`` resource only schedules jobs, it requests
    no device, so ``device: auto`` may still fall back to the CPU there (it logs that it did)."""
    import sys

    flag = os.environ.get(REQUIRE_GPU_ENV, "").strip().lower()
    if flag in {"1", "true", "yes", "on"}:
        return True
    if not os.environ.get(CLUSTER_JOB_ENV):
        return False
    job = getattr(sys.modules.get("__main__"), "snakemake", None)
    resources = getattr(job, "resources", None)
    if resources is None:
        return False
    try:
        value = resources.get("gpu", 0) if hasattr(resources, "get") else resources.gpu
        return int(value or 0) > 0
    except (AttributeError, TypeError, ValueError):
        return False
