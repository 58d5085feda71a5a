"""EMA of the weights: the average itself, resume after a kill, and what the saved model says."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from diffattr.errors import ConfigError
from diffattr.training import ExponentialAverage, TrainingRun, TrainingSettings, train_model
from tests.conftest import SCHEDULER


def _images(n: int = 24) -> np.ndarray:
    return np.random.default_rng(0).uniform(-1, 1, size=(n, 1, 8, 8)).astype(np.float32)


def _settings(**overrides) -> TrainingSettings:
    values = {"epochs": 3, "batch_size": 8, "lr": 1e-3, "checkpoint_every": 2, "device": "cpu"}
    return TrainingSettings(**{**values, "ema_decay": 0.9, **overrides})


def _run(tmp_path, out: str, checkpoints: str, **options) -> TrainingRun:
    return TrainingRun(tmp_path / out, tmp_path / checkpoints, **options)


def _weights(path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "unet" / "diffusion_pytorch_model.safetensors"))


def test_average_follows_the_recurrence_with_warmup():
    parameter = torch.nn.Parameter(torch.zeros(3))
    ema = ExponentialAverage({"w": parameter}, 0.95)
    values = [np.array([1.0, -2.0, 0.5]) * (t + 1) for t in range(30)]
    expected = np.zeros(3)
    for t, value in enumerate(values):
        with torch.no_grad():
            parameter.copy_(torch.tensor(value))
        ema.update(t)
        decay = min(0.95, (1 + t) / (10 + t))
        expected = decay * expected + (1 - decay) * value
    with ema.swapped_in():
        assert np.allclose(parameter.detach().numpy(), expected, atol=1e-5)
    assert np.allclose(parameter.detach().numpy(), values[-1]), "raw weights come back"


def test_saved_model_holds_the_average_and_says_so(tmp_path, tiny_unet_config):
    images = _images()
    train_model(images, _settings(), tiny_unet_config, SCHEDULER, _run(tmp_path, "ema", "c1"))
    raw = _settings(ema_decay=0.0)
    train_model(images, raw, tiny_unet_config, SCHEDULER, _run(tmp_path, "raw", "c2"))
    a, b = _weights(tmp_path / "ema"), _weights(tmp_path / "raw")
    assert any(not torch.equal(a[k], b[k]) for k in a)
    record = json.loads((tmp_path / "ema" / "diffattr_training.json").read_text())
    assert record == {"weights": "ema", "ema_decay": 0.9, "steps": 9}
    raw = json.loads((tmp_path / "raw" / "diffattr_training.json").read_text())
    assert raw == {"weights": "last step", "steps": 9}


def test_killed_run_with_ema_resumes_to_the_same_model(tmp_path, tiny_unet_config):
    images = _images()
    train_model(images, _settings(), tiny_unet_config, SCHEDULER, _run(tmp_path, "full", "c"))
    stopped = _run(tmp_path, "r", "ck", stop_after=5)
    train_model(images, _settings(), tiny_unet_config, SCHEDULER, stopped)
    train_model(images, _settings(), tiny_unet_config, SCHEDULER, _run(tmp_path, "r", "ck"))
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "r")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("value", [-0.1, 1.0])
def test_bad_decay_names_the_field(value):
    with pytest.raises(ConfigError, match="training.ema_decay"):
        _settings(ema_decay=value)
