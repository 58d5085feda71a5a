"""A cluster job that requested a GPU and finds none stops with a clear error (no silent CPU
run); local runs keep `device: auto`'s CPU fallback (the embedded default relies on it)."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest
import torch

from diffattr import jobenv
from diffattr.errors import ConfigError
from diffattr.models import resolve_device


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv(jobenv.REQUIRE_GPU_ENV, raising=False)


def test_auto_falls_back_to_cpu_only_outside_gpu_jobs(no_cuda):
    assert resolve_device("auto", gpu_requested=False) == torch.device("cpu")
    with pytest.raises(ConfigError, match="requested a GPU.*set device: cpu"):
        resolve_device("auto", gpu_requested=True)
    with pytest.raises(ConfigError, match="requested a GPU"):
        resolve_device("cuda", gpu_requested=True)
    assert resolve_device("cpu") == torch.device("cpu")  # cpu on purpose is never an error


def test_gpu_request_is_read_from_the_snakemake_job(no_cuda, monkeypatch):
    monkeypatch.setenv(jobenv.CLUSTER_JOB_ENV, "4242")
    main = types.ModuleType("__main__")
    monkeypatch.setitem(sys.modules, "__main__", main)
    assert not jobenv.gpu_requested()
    main.snakemake = types.SimpleNamespace(resources={"gpu": 0, "mem_mb": 10})
    assert not jobenv.gpu_requested() and resolve_device("auto") == torch.device("cpu")
    main.snakemake = types.SimpleNamespace(resources={"gpu": 1})
    assert jobenv.gpu_requested()
    with pytest.raises(ConfigError, match="this job requested a GPU"):
        resolve_device("auto")
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.delenv(jobenv.CLUSTER_JOB_ENV)  # a local run: the gpu resource requests nothing
    assert not jobenv.gpu_requested() and resolve_device("auto") == torch.device("cpu")
    del main.snakemake
    monkeypatch.setenv(jobenv.REQUIRE_GPU_ENV, "1")
    assert jobenv.gpu_requested()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_snakemake_gpu_job_without_gpu_fails_with_the_message(tmp_path):
    """Real Snakemake `script:` jobs calling resolve_device('auto'): on a CPU-only machine a
    gpu=1 job runs on the CPU locally, and fails with the message inside a SLURM allocation."""
    from tests.workflow_utils import ROOT

    (tmp_path / "job.py").write_text(
        "from diffattr.models import resolve_device\n"
        "open(snakemake.output[0], 'w').write(str(resolve_device('auto')))\n"
    )
    (tmp_path / "Snakefile").write_text(
        "rule gpu_job:\n    output: 'gpu.txt'\n    resources: gpu=1\n    script: 'job.py'\n\n"
        "rule cpu_job:\n    output: 'cpu.txt'\n    resources: gpu=0\n    script: 'job.py'\n"
    )
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"}
    command = [sys.executable, "-m", "snakemake", "--cores", "1", "-d", str(tmp_path)]
    ok = subprocess.run(
        [*command, "-s", str(tmp_path / "Snakefile"), "cpu.txt"], capture_output=True,
        text=True, cwd=tmp_path, env=env, timeout=300,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert (tmp_path / "cpu.txt").read_text() == "cpu"
    local = subprocess.run(
        [*command, "-s", str(tmp_path / "Snakefile"), "gpu.txt"], capture_output=True,
        text=True, cwd=tmp_path, env=env, timeout=300,
    )  # fmt: skip
    assert local.returncode == 0 and (tmp_path / "gpu.txt").read_text() == "cpu", local.stderr
    (tmp_path / "gpu.txt").unlink()
    failed = subprocess.run(
        [*command, "-s", str(tmp_path / "Snakefile"), "gpu.txt"], capture_output=True,
        text=True, cwd=tmp_path, env={**env, "SLURM_JOB_ID": "4242"}, timeout=300,
    )  # fmt: skip
    assert failed.returncode != 0
    assert "this job requested a GPU" in failed.stdout + failed.stderr
