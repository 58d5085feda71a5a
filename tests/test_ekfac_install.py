"""kronfluence installed from scratch the way `make setup` (tools/setup_venv.sh) does it:
--no-deps, its real dependencies from the ``ekfac`` extra, no torchvision, no second torch, no
stray ``tests``."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _run(*args, **kwargs):
    return subprocess.run(args, check=True, capture_output=True, text=True, timeout=600, **kwargs)


def test_kronfluence_installs_without_torchvision(tmp_path):
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", str(venv))
    python = venv / "bin" / "python"
    purelib = _run(str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    # torch and the rest come from this environment (read-only, appended after the new venv's
    # own site-packages), so the test downloads only kronfluence and its small dependencies.
    Path(purelib.stdout.strip(), "parent.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = extra["optional-dependencies"]["ekfac"]
    target = Path(purelib.stdout.strip())
    _run(
        str(python),
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-deps",
        "--target",
        str(target),
        "kronfluence==1.0.1",
        *deps,
    )
    setup_script = (ROOT / "tools" / "setup_venv.sh").read_text()
    cleanup = next(line for line in setup_script.splitlines() if "shutil.rmtree" in line)
    command = cleanup.split('-c "', 1)[1].rsplit('"', 1)[0]
    _run(str(python), "-c", command)
    check = _run(
        str(python),
        "-c",
        "import importlib.util, kronfluence, torch; "
        "from kronfluence.analyzer import Analyzer, prepare_model; "
        "print(kronfluence.__version__, torch.__version__, "
        "importlib.util.find_spec('torchvision') is None, "
        "(__import__('pathlib').Path(kronfluence.__file__).parents[1] / 'tests').exists())",
    )
    version, torch_version, no_torchvision, stray_tests = check.stdout.split()
    assert version == "1.0.1"
    assert torch_version == __import__("torch").__version__  # the one torch, not a second
    assert no_torchvision == "True"
    assert stray_tests == "False"
