"""The local job server (diffattr.job_server): a delegated job behaves as one in its own process
(exit status, output, environment, signals), and a whole run through it gives the same results."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from diffattr import job_server
from diffattr.job_server import PEAK_MEMORY_LINE, JobServer, peak_memory_mb

ROOT = Path(__file__).resolve().parents[1]

# A stand-in for a Snakemake job script: the preamble's `snakemake` object, then delegate().
JOB = textwrap.dedent(
    """
    import os, sys, time
    from types import SimpleNamespace
    import diffattr.job_server as server
    snakemake = SimpleNamespace(threads=int(os.environ.get("THREADS", "1")), log=["job.log"])
    preloaded = "torch" in sys.modules  # before delegate(): only a server child has it
    server.delegate(snakemake)
    print(f"served={server._inside_server} preloaded={preloaded} pid={os.getpid()} "
          f"cwd={os.getcwd()} mark={os.environ.get('MARK')} argv={sys.argv[1:]}", flush=True)
    print("on stderr", file=sys.stderr)
    action = sys.argv[1]
    if action == "raise":
        raise ValueError("boom")
    if action == "sleep":
        open("child.pid", "w").write(str(os.getpid()))
        time.sleep(60)
    sys.exit(int(action))
    """
)


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A running job server and a folder holding the job script."""
    monkeypatch.setenv(job_server.ENABLE_ENV, "1")
    (tmp_path / "job.py").write_text(JOB)
    instance = JobServer()
    assert instance.start(tmp_path / "logs", local=True)
    yield tmp_path
    instance.stop()


def _job(folder: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(ROOT / "src"), **env}
    return subprocess.run(
        [sys.executable, "job.py", *args],
        cwd=folder,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _fields(stdout: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in stdout.split() if "=" in item)


def test_a_delegated_job_keeps_its_status_output_environment_and_arguments(server):
    first = _job(server, "0")  # may wait for the server's imports
    assert first.returncode == 0, first.stderr
    fields = _fields(first.stdout)
    assert fields["served"] == "True" and fields["preloaded"] == "True"
    assert Path(fields["cwd"]) == server and "on stderr" in first.stderr
    marked = _job(server, "3", MARK="x")
    assert marked.returncode == 3
    assert _fields(marked.stdout)["mark"] == "x" and _fields(marked.stdout)["argv"] == "['3']"
    failed = _job(server, "raise")
    assert failed.returncode == 1 and "ValueError: boom" in failed.stderr


def test_a_delegated_job_records_its_own_peak_memory_in_its_log(server):
    assert _job(server, "0").returncode == 0
    peak = peak_memory_mb(server / "job.log")
    assert peak is not None and peak > 50  # the child holds torch: far above the client's RSS


def test_jobs_with_more_threads_or_without_a_server_run_in_their_own_process(server, tmp_path):
    threaded = _job(server, "0", THREADS="2")
    assert _fields(threaded.stdout)["served"] == "False"
    alone = {k: v for k, v in os.environ.items() if k != job_server.SOCKET_ENV}
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "job.py").write_text(JOB)
    result = subprocess.run(
        [sys.executable, "job.py", "4"],
        cwd=tmp_path / "other",
        env={**alone, "PYTHONPATH": str(ROOT / "src")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 4 and _fields(result.stdout)["served"] == "False"
    foreign = _job(server, "0", **{job_server.PREFIX_ENV: "/another/python"})
    assert _fields(foreign.stdout)["served"] == "False"  # a conda job's Python is not ours


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_killing_the_client_ends_the_job(server, signum):
    environment = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    client = subprocess.Popen(
        [sys.executable, "job.py", "sleep"], cwd=server, env=environment, stdout=subprocess.PIPE
    )
    pid_file = server / "child.pid"
    deadline = time.monotonic() + 60
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    child = int(pid_file.read_text())
    assert child != client.pid  # the job runs in the server's fork, not in the client
    client.send_signal(signum)
    client.wait(30)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the job (pid {child}) outlived its client killed by signal {signum}")


def test_the_server_starts_only_when_asked_and_local(tmp_path, monkeypatch):
    monkeypatch.delenv(job_server.ENABLE_ENV, raising=False)
    assert not JobServer().start(tmp_path, local=True)
    monkeypatch.setenv(job_server.ENABLE_ENV, "1")
    assert not JobServer().start(tmp_path, local=False)  # a cluster run: jobs run elsewhere
    assert job_server.SOCKET_ENV not in os.environ


def test_the_runtime_table_reads_a_served_jobs_memory_from_its_log(tmp_path):
    from diffattr.report import read_benchmarks

    benchmarks = tmp_path / "benchmarks" / "train_subset" / "lds" / "1"
    benchmarks.mkdir(parents=True)
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    for seed in (0, 1):
        (benchmarks / f"seed{seed}.tsv").write_text(
            header + "20.0\t0:00:20\t48.0\t0\t0\t0\t0\t0\t0\t1\n"
        )
    log = tmp_path / "train_subset" / "lds" / "1" / "seed0.log"
    log.parent.mkdir(parents=True)
    log.write_text(f"training...\n{PEAK_MEMORY_LINE} 412.50 MB\n")
    rows = {row["job"]: row["max_rss_mb"] for row in read_benchmarks(tmp_path / "benchmarks")}
    assert rows == {"lds/1/seed0": 412.5, "lds/1/seed1": 48.0}


@pytest.mark.slow
def test_a_run_through_the_job_server_equals_one_without(tiny_run, tmp_path):
    """The whole tiny config again, every one-thread job in the server: every result file equal
    to the session's run without it, byte for byte where not numeric (diffattr.compare
    --exact)."""
    from diffattr.compare import Comparator, compare_trees
    from tests.workflow_utils import snakemake, tiny_config, write_config

    workdir, _, _ = tiny_run
    served = tmp_path / "served"
    served.mkdir()
    config = write_config(served, tiny_config())
    environment = {**os.environ, job_server.ENABLE_ENV: "1"}
    result = snakemake(served, config, "--cores", "2", timeout=1800, env=environment)
    assert "job server started" in result.stdout + result.stderr
    logs = list((served / "logs").rglob("*.log"))
    delegated = [log for log in logs if peak_memory_mb(log) is not None]
    assert len(delegated) > 40, f"only {len(delegated)} of {len(logs)} jobs ran in the server"
    comparator = Comparator(exact=True)
    counts = compare_trees(workdir / "results", served / "results", comparator)
    # other tests may have added results to the shared run; the served run must hold no others
    diffs = [d for d in comparator.diffs if not d.endswith("only in A")]
    assert not diffs, diffs[:20]
    assert counts["hdf5"] > 20 and counts["json"] > 50


def test_a_job_with_a_closed_stdin_still_runs(server):
    """Snakemake may start a job without stdin: passing fd 0 on must not break the job."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    result = subprocess.run(
        [sys.executable, "job.py", "0"],
        cwd=server,
        env=environment,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=lambda: os.close(0),
    )
    assert result.returncode == 0, result.stderr
    assert _fields(result.stdout)["argv"] == "['0']"
