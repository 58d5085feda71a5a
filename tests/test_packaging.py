"""The package as users get it: a wheel with everything it needs, and a workflow that runs
without the package installed.

Both tests use a fresh virtual environment whose own site-packages holds nothing of diffattr.
The heavy dependencies (torch, diffusers, snakemake, ...) are made visible by one ``.pth`` line
naming the test runner's site-packages; Python does not process the ``.pth`` files of a
directory added that way, so the runner's editable install of diffattr stays invisible, and
each test first checks where (or whether) ``import diffattr`` resolves.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.workflow_utils import ROOT, tiny_config, write_config


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME"}}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def _fresh_venv(path: Path) -> Path:
    """A venv without pip or diffattr that sees the runner's third-party packages."""
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120)
    python = path / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
        env=_clean_env(),
    ).stdout.strip()
    runner = sorted({sysconfig.get_paths()["purelib"], *site.getsitepackages()})
    (Path(purelib) / "runner-deps.pth").write_text("\n".join(runner) + "\n")
    return python


def _run(args: list, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=_clean_env(),
        timeout=timeout,
    )
    assert result.returncode == 0, f"{args}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def _import_location(python: Path, cwd: Path) -> str:
    code = "import importlib.util as u; s = u.find_spec('diffattr'); print(s and s.origin)"
    return _run([python, "-c", code], cwd).stdout.strip()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of the checkout's package sources (no build/ in the tree)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    dist = tmp / "dist"
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
        + ["-w", dist, source],
        cwd=tmp,
    )
    (wheel,) = dist.glob("diffattr-*.whl")
    return wheel


def test_wheel_carries_the_schema_and_works_outside_the_checkout(wheel, tmp_path):
    names = zipfile.ZipFile(wheel).namelist()
    assert "diffattr/schemas/config.schema.yaml" in names, names
    python = _fresh_venv(tmp_path / "env")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    assert _import_location(python, outside) == "None", "diffattr visible before the install"
    _run([python, "-m", "pip", "install", "--no-deps", "--no-index", "-q", wheel], outside)
    location = Path(_import_location(python, outside))
    assert (tmp_path / "env") in location.parents, location
    assert ROOT not in location.parents, location

    diffattr = tmp_path / "env" / "bin" / "diffattr"
    docs = ROOT / "docs" / "configuration.md"
    checked = _run([diffattr, "config-docs", "--check", "--output", docs], outside)
    assert "up to date" in checked.stdout
    shutil.copy(ROOT / "config.yaml", outside / "config.yaml")
    validated = _run([diffattr, "validate", "config.yaml"], outside)
    assert "valid (experiment 'digits-demo')" in validated.stdout
    # the same check run in the checkout's docs folder layout: a copy of docs/ under cwd
    (outside / "docs").mkdir()
    shutil.copy(docs, outside / "docs" / "configuration.md")
    assert "up to date" in _run([diffattr, "config-docs", "--check"], outside).stdout
    # a bad key is still caught by the packaged schema
    (outside / "bad.yaml").write_text("experiment: x\nmodle: {}\n")
    bad = subprocess.run(
        [str(diffattr), "validate", "bad.yaml"],
        capture_output=True,
        text=True,
        cwd=outside,
        env=_clean_env(),
    )
    assert bad.returncode == 2 and "did you mean 'model'" in bad.stderr, bad.stderr


def test_workflow_dry_run_without_the_package_installed(tmp_path):
    python = _fresh_venv(tmp_path / "env")
    workdir = tmp_path / "work"
    workdir.mkdir()
    assert _import_location(python, workdir) == "None", "diffattr importable without src/"
    configfile = write_config(tmp_path, tiny_config())
    result = _run(
        [python, "-m", "snakemake", "-n", "--quiet", "rules", "--snakefile", ROOT / "Snakefile"]
        + ["--directory", workdir, "--configfile", configfile],
        cwd=workdir,
    )
    text = result.stdout + result.stderr
    assert "train_main" in text and "extract_train_features" in text, text[-3000:]
