"""Helpers to run the workflow from tests: dry runs with parsed job counts, and real runs."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
# Everything `snakemake --snakefile <copy>/Snakefile` reads from the workflow folder.
WORKFLOW_PARTS = ("rules", "report", "envs", "profiles", "slurm", "scripts", "src")
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")


def copy_workflow(dest: Path, link: tuple[str, ...] = ()) -> Path:
    """A copy of the workflow (Snakefile, config.yaml and WORKFLOW_PARTS) in ``dest``, so a test
    can edit or touch it without changing the checkout; parts named in ``link`` are symlinks
    to the checkout instead (read only). Returns the copy's Snakefile."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("Snakefile", "config.yaml"):
        shutil.copy2(ROOT / name, dest / name)
    for name in WORKFLOW_PARTS:
        if name in link:
            (dest / name).symlink_to(ROOT / name)
        else:
            shutil.copytree(ROOT / name, dest / name, ignore=_IGNORE)
    return dest / "Snakefile"


def write_config(directory: Path, config: dict, name: str = "config.yaml") -> Path:
    path = directory / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def tiny_config(**changes) -> dict:
    with open(ROOT / "tests" / "config-tiny.yaml") as handle:
        config = yaml.safe_load(handle)
    config = copy.deepcopy(config)
    for dotted, value in changes.items():
        node = config
        *parents, last = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return config


def snakemake(
    workdir: Path,
    configfile: Path,
    *args: str,
    timeout: int = 900,
    snakefile: Path = ROOT / "Snakefile",
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    command = [
        *SNAKEMAKE,
        "--snakefile",
        str(snakefile),
        "--directory",
        str(workdir),
        "--configfile",
        str(configfile),
        *args,
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env
    )
    if result.returncode != 0:
        raise AssertionError(
            f"snakemake failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}"
        )
    return result


def planned_jobs(
    workdir: Path, configfile: Path, *args: str, snakefile: Path = ROOT / "Snakefile"
) -> dict[str, int]:
    """Rule name -> number of jobs a dry run plans ({} when nothing is to be done)."""
    result = snakemake(workdir, configfile, "-n", "--quiet", "rules", *args, snakefile=snakefile)
    text = result.stdout + result.stderr
    if "Nothing to be done" in text:
        return {}
    counts: dict[str, int] = {}
    block = text.split("Job stats:")[1]
    for line in block.splitlines()[3:]:
        match = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not match:
            break
        counts[match.group(1)] = int(match.group(2))
    counts.pop("total", None)
    return counts
