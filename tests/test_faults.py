"""Faults where they happen, locally: a second Snakemake driver on a running directory, and an
HDF5 write that hits a full disk. (Jobs cancelled by the scheduler and a killed driver are
injected on real SLURM by tests/slurm/run_slurm_test.sh; in-process kills: test_preemption.py.)"""

from __future__ import annotations

import os
import subprocess
import time

import numpy as np
import pytest

from diffattr import store
from diffattr.errors import CorruptFileError, DiskFullError
from tests.workflow_utils import ROOT, SNAKEMAKE, planned_jobs, tiny_config, write_config


@pytest.fixture
def full_disk(tmp_path):
    """A 1 MiB tmpfs (root only): whatever is written there beyond 1 MiB fails with ENOSPC."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)])
    if made.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_hdf5_write_on_a_full_disk_leaves_no_file(full_disk):
    target = full_disk / "scores.h5"
    matrix = np.ones((1000, 1000), np.float32)  # 4 MB
    with pytest.raises(DiskFullError, match=r"scores\.h5: no space left on the device") as error:
        store.write_h5(target, {"scores": matrix}, {"kind": "test"})
    assert "nothing was written to scores.h5" in str(error.value)
    assert list(full_disk.iterdir()) == [], "neither the file nor its temporary is left"
    store.write_h5(target, {"scores": matrix[:10]}, {"kind": "test"})  # the space came back
    with store.open_h5(target) as handle:
        assert handle["scores"].shape == (10, 1000)
    with pytest.raises(DiskFullError):
        store.write_h5(full_disk / "other.h5", {"scores": matrix}, {})
    assert sorted(p.name for p in full_disk.iterdir()) == ["scores.h5"], "the earlier file stays"


def test_file_cut_short_by_a_full_disk_is_refused(tmp_path):
    """What a writer without the atomic rename would leave: readers refuse it."""
    path = tmp_path / "features.h5"
    store.write_h5(path, {"features": np.ones((300, 300), np.float32)}, {})
    path.write_bytes(path.read_bytes()[: 1 << 16])
    with pytest.raises(CorruptFileError, match=r"features\.h5: not a readable HDF5 file"):
        store.open_h5(path)


@pytest.mark.slow
def test_second_driver_on_the_same_directory_is_refused_and_loses_nothing(tmp_path):
    """While one driver trains models, a second one on the same directory stops at Snakemake's
    lock without touching anything; the first finishes, and its outputs are up to date."""
    config = write_config(tmp_path, tiny_config())
    # three trainings, one after another: after the first one's log appears, two more hold the lock
    targets = ["results/tiny/models/main", *(f"results/tiny/models/lds/{k}/seed0" for k in (0, 1))]
    command = [*SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path)]
    command += ["--configfile", str(config), "--cores", "1", *targets]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        logs = tmp_path / "logs" / "tiny"

        def training() -> bool:
            return (logs / "train_main.log").exists() or any(logs.glob("train_subset/**/*.log"))

        deadline = time.monotonic() + 600
        while not training() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert first.poll() is None and training(), "the first driver is training"
        dataset = tmp_path / "results" / "tiny" / "data" / "dataset.h5"
        before = dataset.read_bytes()
        second = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert second.returncode != 0
        assert "Directory cannot be locked" in second.stdout + second.stderr
        assert first.poll() is None, "the refused driver did not stop the first"
        assert dataset.read_bytes() == before
        output, _ = first.communicate(timeout=900)
        assert first.returncode == 0, output[-3000:]
    finally:
        if first.poll() is None:
            first.kill()
    with store.open_h5(tmp_path / "results" / "tiny" / "data" / "dataset.h5"):
        pass
    assert all((tmp_path / target / "unet").is_dir() for target in targets)
    assert planned_jobs(tmp_path, config, "--", *targets) == {}
