"""Shared fixtures: tiny models and configs with random weights (nothing is downloaded)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]

TINY_UNET = {
    "sample_size": 8,
    "in_channels": 1,
    "out_channels": 1,
    "block_out_channels": [8, 16],
    "layers_per_block": 1,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
    "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
    "norm_num_groups": 4,
    "attention_head_dim": 4,
}

SCHEDULER = {"num_train_timesteps": 1000, "beta_schedule": "linear"}


@pytest.fixture(autouse=True)
def _one_thread():
    """Tests run on a shared 2-core machine: keep torch on one thread, restore afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_unet_config() -> dict:
    return copy.deepcopy(TINY_UNET)


@pytest.fixture
def tiny_config() -> dict:
    with open(ROOT / "tests" / "config-tiny.yaml") as handle:
        return yaml.safe_load(handle)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """(workdir, configfile, result) of one complete run of tests/config-tiny.yaml, shared by
    every test that reads a finished run (the incremental-rerun tests, the checks with teeth,
    the report): those tests only read it, plan dry runs in it or write next to it.

    DIFFATTR_TINY_RUN=DIR (development aid) reuses a finished tiny run in DIR (config.yaml =
    tests/config-tiny.yaml)."""
    import os

    from tests.workflow_utils import snakemake, tiny_config, write_config

    if os.environ.get("DIFFATTR_TINY_RUN"):
        workdir = Path(os.environ["DIFFATTR_TINY_RUN"])
        config = workdir / "config.yaml"
        return workdir, config, snakemake(workdir, config, "--cores", "1")
    workdir = tmp_path_factory.mktemp("run")
    config = write_config(workdir, tiny_config())
    return workdir, config, snakemake(workdir, config, "--cores", "2", timeout=1800)


# --------------------------------------------------------------------------- the checkout
# The suite must leave the checkout as it found it (README: `make run` then `make test`): no
# test may write a run's state into it or touch its code, which would make Snakemake rerun a
# finished run. Checked once for the whole session; a failure lists the changed paths.
RUN_STATE = ("results", "logs", ".snakemake", ".checkpoints")
# tests/artifacts (git-ignored) holds the screenshots the report tests save for a person to open.
ARTIFACTS = ROOT / "tests" / "artifacts"
_SKIP = {".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache"}


def _checkout_state() -> dict[str, tuple[int, int, str]]:
    """(mtime, size, content digest) of every file of the checkout outside caches and .venv
    (no digest in a run's state folders, where any change counts)."""
    import hashlib
    import os

    state = {}
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [
            d
            for d in dirnames
            if d not in _SKIP
            and not d.endswith(".egg-info")
            and Path(dirpath, d) != ARTIFACTS  # screenshots the suite leaves for a person
        ]
        for name in filenames:
            path = Path(dirpath) / name
            relative = str(path.relative_to(ROOT))
            try:
                info = path.lstat()
                run_state = relative.split(os.sep, 1)[0] in RUN_STATE
                content = b"" if run_state or info.st_size > 1 << 24 else path.read_bytes()
            except OSError:
                continue
            digest = hashlib.sha1(content).hexdigest()
            state[relative] = (info.st_mtime_ns, info.st_size, digest)
    return state


def checkout_changes(before: dict, after: dict) -> list[str]:
    """Paths a test changed: anything in a run's state folders, and code files touched (a new
    mtime, the same content). Content edits of code are left out: a merge into the checkout
    while the suite runs is not the suite's doing."""
    changed = []
    for path in sorted(before.keys() | after.keys()):
        old, new = before.get(path), after.get(path)
        if old == new:
            continue
        if path.split("/", 1)[0] in RUN_STATE:
            changed.append(f"{path} (run state)")
        elif old and new and old[1:] == new[1:]:
            changed.append(f"{path} (touched)")
    return changed


def pytest_sessionstart(session):
    session.config.stash[_BEFORE] = _checkout_state()


def pytest_sessionfinish(session, exitstatus):
    changed = checkout_changes(session.config.stash[_BEFORE], _checkout_state())
    if changed:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        lines = "\n  ".join(changed[:30])
        reporter.ensure_newline()
        reporter.write_line(
            f"FAILED: the tests changed {len(changed)} path(s) of the checkout:\n  {lines}",
            red=True,
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


_BEFORE = pytest.StashKey[dict]()
