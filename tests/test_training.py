"""Training: determinism, bit-identical resume after a kill, NaN handling, saving."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from diffattr.errors import ConfigError, TrainingError
from diffattr.models import load_model
from diffattr.training import TrainingRun, TrainingSettings, batch_rows, train_model
from tests.conftest import SCHEDULER


def _images(n: int = 24) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.uniform(-1, 1, size=(n, 1, 8, 8)).astype(np.float32)


def _weights(path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "unet" / "diffusion_pytorch_model.safetensors"))


def _settings(**overrides) -> TrainingSettings:
    values = {"epochs": 3, "batch_size": 8, "lr": 1e-3, "checkpoint_every": 2, "device": "cpu"}
    return TrainingSettings(**{**values, **overrides})


def test_batches_cover_every_row_once_per_epoch():
    rows = np.concatenate([batch_rows(10, 4, seed=1, step=s) for s in range(3)])
    assert sorted(rows.tolist()) == list(range(10))
    assert not np.array_equal(rows, np.concatenate([batch_rows(10, 4, 1, s) for s in range(3, 6)]))


def test_killed_run_resumes_to_the_same_model(tmp_path, tiny_unet_config):
    images = _images()
    full = train_model(
        images,
        _settings(),
        tiny_unet_config,
        SCHEDULER,
        TrainingRun(tmp_path / "full", tmp_path / "ck-full"),
        0.1,
    )
    assert full["steps"] == 9
    # Interrupted after 5 steps: the last checkpoint is at step 4; nothing final is written.
    partial = train_model(
        images,
        _settings(),
        tiny_unet_config,
        SCHEDULER,
        TrainingRun(tmp_path / "resumed", tmp_path / "ck", stop_after=5),
        0.1,
    )
    assert partial["stopped_early"] and not (tmp_path / "resumed").exists()
    assert (tmp_path / "ck" / "state.pt").exists()
    resumed = TrainingRun(tmp_path / "resumed", tmp_path / "ck")
    train_model(images, _settings(), tiny_unet_config, SCHEDULER, resumed, 0.1)
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "resumed")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not (tmp_path / "ck").exists(), "checkpoints are removed after success"


def test_checkpoint_from_other_settings_is_ignored(tmp_path, tiny_unet_config):
    images = _images()
    stopped = TrainingRun(tmp_path / "x", tmp_path / "ck", stop_after=4)
    train_model(images, _settings(), tiny_unet_config, SCHEDULER, stopped)
    other = _settings(lr=2e-3)
    train_model(
        images, other, tiny_unet_config, SCHEDULER, TrainingRun(tmp_path / "y", tmp_path / "ck")
    )
    train_model(
        images, other, tiny_unet_config, SCHEDULER, TrainingRun(tmp_path / "z", tmp_path / "ck2")
    )
    a, b = _weights(tmp_path / "y"), _weights(tmp_path / "z")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_seeds_change_the_model(tmp_path, tiny_unet_config):
    images = _images()
    for seed in (0, 1):
        train_model(
            images,
            _settings(seed=seed, epochs=1),
            tiny_unet_config,
            SCHEDULER,
            TrainingRun(tmp_path / f"s{seed}", tmp_path / f"ck{seed}"),
        )
    a, b = _weights(tmp_path / "s0"), _weights(tmp_path / "s1")
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_nan_loss_stops_and_keeps_checkpoint(tmp_path, tiny_unet_config):
    images = _images()
    images[3] = np.nan
    with pytest.raises(TrainingError, match=r"at step \d+ of 9"):
        run = TrainingRun(tmp_path / "m", tmp_path / "ck")
        train_model(images, _settings(), tiny_unet_config, SCHEDULER, run)
    assert (tmp_path / "ck" / "state.pt").exists()
    assert not (tmp_path / "m").exists()


def test_saved_model_loads_as_pipeline(tmp_path, tiny_unet_config):
    run = TrainingRun(tmp_path / "m", tmp_path / "ck")
    train_model(_images(), _settings(epochs=1), tiny_unet_config, SCHEDULER, run)
    model, scheduler = load_model(tmp_path / "m")
    assert not model.training and scheduler.config.num_train_timesteps == 1000
    from diffusers import DDPMPipeline

    assert DDPMPipeline.from_pretrained(tmp_path / "m").unet is not None


@pytest.mark.parametrize(
    "field,value", [("epochs", 0), ("batch_size", 0), ("lr", 0.0), ("warmup_fraction", 1.0)]
)
def test_bad_settings_name_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        _settings(**{field: value})


def test_a_bad_stop_after_is_refused():
    with pytest.raises(ConfigError, match="TrainingRun.stop_after = 0 is not valid"):
        TrainingRun("m", "ck", stop_after=0)


def test_unknown_setting_is_rejected():
    with pytest.raises(ConfigError, match="unknown training settings"):
        TrainingSettings.from_dict({"epochs": 1, "batch_size": 2, "lrr": 1})
