"""Killed jobs: no output that looks complete is left behind, and training resumes exactly.

Each job runs in a subprocess that kills itself (SIGKILL, no cleanup possible) at the worst
moment: training after its second checkpoint, features and scores while their HDF5 file is
half-written.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from diffattr import store
from diffattr.errors import CorruptFileError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

TINY = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    import torch
    torch.set_num_threads(1)
    sys.path.insert(0, {root!r})
    from tests.conftest import TINY_UNET, SCHEDULER
    from diffattr import store, training, features, files, scoring
    images = np.random.default_rng(0).uniform(-1, 1, (24, 1, 8, 8)).astype(np.float32)
    settings = training.TrainingSettings(
        epochs=3, batch_size=8, lr=1e-3, checkpoint_every=2, device="cpu", seed=7
    )

    def kill_self(*_args, **_kwargs):
        os.kill(os.getpid(), signal.SIGKILL)
    """
)


def run_killed(tmp_path, body: str) -> subprocess.CompletedProcess:
    from tests.conftest import ROOT

    script = tmp_path / "job.py"
    script.write_text(TINY.format(root=str(ROOT)) + textwrap.dedent(body))
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    return result


def _weights(path):
    return load_file(str(path / "unet" / "diffusion_pytorch_model.safetensors"))


def test_training_killed_after_a_checkpoint_resumes_bit_identically(tmp_path):
    run_killed(
        tmp_path,
        f"""
        original = training.Checkpointer.save
        def save_then_maybe_die(self, *args, **kwargs):
            original(self, *args, **kwargs)
            if self.saved_step >= 4:
                kill_self()
        training.Checkpointer.save = save_then_maybe_die
        run = training.TrainingRun({str(tmp_path / "m")!r}, {str(tmp_path / "ck")!r})
        training.train_model(images, settings, TINY_UNET, SCHEDULER, run, 0.1)
        """,
    )
    assert not (tmp_path / "m").exists()
    assert (tmp_path / "ck" / "state.pt").exists()

    from diffattr import training
    from tests.conftest import SCHEDULER, TINY_UNET

    images = np.random.default_rng(0).uniform(-1, 1, (24, 1, 8, 8)).astype(np.float32)
    settings = training.TrainingSettings(
        epochs=3, batch_size=8, lr=1e-3, checkpoint_every=2, device="cpu", seed=7
    )
    resumed = training.TrainingRun(tmp_path / "m", tmp_path / "ck")
    training.train_model(images, settings, TINY_UNET, SCHEDULER, resumed, 0.1)
    fresh = training.TrainingRun(tmp_path / "ref", tmp_path / "ck2")
    training.train_model(images, settings, TINY_UNET, SCHEDULER, fresh, 0.1)
    a, b = _weights(tmp_path / "m"), _weights(tmp_path / "ref")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_features_killed_mid_write_leave_no_file(tmp_path):
    out = tmp_path / "features.h5"
    run_killed(
        tmp_path,
        f"""
        original = store.h5_writer
        import contextlib
        @contextlib.contextmanager
        def dying_writer(path, attrs):
            with original(path, attrs) as handle:
                yield handle
                handle.flush()
                kill_self()
        files.h5_writer = dying_writer
        features.write_features({str(out)!r}, np.ones((5, 4), np.float32), np.arange(5), {{"a": 1}})
        """,
    )
    assert not out.exists()
    leftovers = list(tmp_path.glob(".features.h5.*"))
    assert leftovers, "the killed writer's temporary is still there (SIGKILL skips cleanup)"
    with pytest.raises(CorruptFileError):
        store.open_h5(leftovers[0])
    # The next attempt at the same output removes the stale temporary.
    store.write_h5(out, {"x": np.zeros(1)}, {})
    assert not list(tmp_path.glob(".features.h5.*"))


def test_scores_killed_mid_write_leave_no_file(tmp_path):
    from diffattr.features import write_features

    attrs = {
        "proj_kind": "normal",
        "proj_seed": 0,
        "output_fn": "loss",
        "timesteps": [0],
        "noise_seed": 0,
        "noise": "common",
        "noise_batch_size": 0,
        "noise_shard_rows": 0,
        "model_digest": "x",
    }
    rng = np.random.default_rng(0)
    write_features(
        tmp_path / "train.h5", rng.normal(size=(30, 6)), np.arange(30), {**attrs, "split": "train"}
    )
    write_features(
        tmp_path / "val.h5", rng.normal(size=(4, 6)), np.arange(4), {**attrs, "split": "val"}
    )
    out = tmp_path / "scores.h5"
    run_killed(
        tmp_path,
        f"""
        original = store.h5_writer
        import contextlib
        @contextlib.contextmanager
        def dying_writer(path, attrs):
            with original(path, attrs) as handle:
                yield handle
                kill_self()
        files.h5_writer = dying_writer
        scoring.write_trak_scores({str(tmp_path / "train.h5")!r}, {str(tmp_path / "val.h5")!r},
                                  {str(out)!r}, [1.0, 10.0], {{"method": "trak"}},
                                  scoring.TrakOptions(chunk_rows=7))
        """,
    )
    assert not out.exists()
