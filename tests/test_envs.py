"""The conda env files used with `--sdm conda` stay consistent with the package.

Creating the envs needs conda and the conda-forge channel, which CI cannot reach; these tests
check what can be checked offline: syntax, the Python version and that every runtime
dependency of diffattr (and of its hub extra) is listed in both files.
"""

import re
from pathlib import Path

import pytest
import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]
ENV_FILES = [ROOT / "envs" / "cpu.yaml", ROOT / "envs" / "cuda.yaml"]


def requirement_name(spec):
    return re.split(r"[<>=!~ \[]", spec.strip(), maxsplit=1)[0].lower().replace("_", "-")


def pip_requirements(env):
    for dependency in env["dependencies"]:
        if isinstance(dependency, dict):
            return [line for line in dependency["pip"] if not line.startswith("--")]
    raise AssertionError("no pip section")


def package_requirements():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    return {requirement_name(s) for s in project["dependencies"] + extras["hub"]}


@pytest.mark.parametrize("path", ENV_FILES, ids=lambda p: p.name)
def test_env_lists_every_runtime_dependency(path):
    env = yaml.safe_load(path.read_text())
    listed = {requirement_name(spec) for spec in pip_requirements(env)}
    assert package_requirements() <= listed, package_requirements() - listed


def env_python(path):
    env = yaml.safe_load(path.read_text())
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    return python.split("=", 1)[1]


def test_envs_pin_one_python_the_package_supports():
    """Both envs run the same Python (a job may switch between them), one that pyproject's
    requires-python admits."""
    from packaging.specifiers import SpecifierSet

    versions = {env_python(path) for path in ENV_FILES}
    assert len(versions) == 1, versions
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert SpecifierSet(requires).contains(versions.pop()), requires


def test_cpu_env_uses_the_cpu_wheel_index():
    env = yaml.safe_load(ENV_FILES[0].read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in pip
