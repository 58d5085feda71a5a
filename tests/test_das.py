"""DAS (Lin et al. 2025) against a direct computation from its definition on a tiny UNet, its
residual weights against a per-sample loop, and the squared readout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from diffattr import store
from diffattr.errors import FeatureMismatchError
from diffattr.features import (
    GradientOptions,
    extract_features,
    num_trainable_parameters,
    trainable_parameters,
)
from diffattr.files import read_scores
from diffattr.methods import ScoreJob, get_method, validate_methods
from diffattr.noise import sample_noise
from diffattr.projection import make_projector
from diffattr.queries import QueryRows
from diffattr.residuals import das_weights, residual_profile
from tests.test_features import images, tiny_unet

STEPS = [0, 300, 600, 900]
LAMBDAS = [0.1, 10.0]


@pytest.fixture(scope="module")
def scheduler():
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")


def _x_t(scheduler, x0, sample_id, t, seed=0):
    abar = scheduler.alphas_cumprod.double()[t]
    eps = sample_noise("features", seed, t, [sample_id], x0.shape).double()
    return abar.sqrt() * x0[None].double() + (1 - abar).sqrt() * eps, eps


def slow_das_features(model, scheduler, x0, ids, steps, projector):
    """φ = P (1/K) Σ_t ĝ_t, ĝ_t = ∇ mean(ε̂) / (‖∇ mean(ε̂)‖ + 1e-8), one backward per (i, t)."""
    params = list(trainable_parameters(model).values())
    rows = []
    for i, sample_id in enumerate(ids):
        total = 0
        for t in steps:
            x_t, _ = _x_t(scheduler, x0[i], sample_id, t)
            model.zero_grad()
            model(x_t, torch.tensor([t])).sample.mean().backward()
            g = torch.cat([p.grad.reshape(-1) for p in params])
            total = total + g / (g.norm() + 1e-8)
        rows.append(total / len(steps))
    model.zero_grad()
    return projector.project(torch.stack(rows).float()).double().numpy()


def slow_weights(model, scheduler, x0, ids, steps):
    out = []
    with torch.no_grad():
        for i, sample_id in enumerate(ids):
            r = []
            for t in steps:
                x_t, eps = _x_t(scheduler, x0[i], sample_id, t)
                pred = model(x_t, torch.tensor([t])).sample
                r.append(float(((pred - eps) ** 2).mean().sqrt()))
            r = np.asarray(r)
            out.append(np.mean(r / np.linalg.norm(r)))
    return np.asarray(out)


def test_das_weights_definition():
    r = np.array([[1.0, 1.0, 1.0, 1.0], [4.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    np.testing.assert_allclose(das_weights(r), [0.5, 0.25, 0.0])


def test_residual_profile_matches_a_per_sample_loop(scheduler):
    model = tiny_unet().double()
    x0, ids = images(3).double(), [5, 0, 2]
    fast = residual_profile(model, scheduler, QueryRows(x0, ids), STEPS, 0, max_evaluations=5)
    slow = slow_weights(model, scheduler, x0, ids, STEPS)
    np.testing.assert_allclose(das_weights(fast.numpy()), slow, rtol=1e-9)


def _write(path, feats, ids, attrs):
    from diffattr.features import write_features

    write_features(path, feats, ids, attrs)


@pytest.mark.parametrize("readout", ["signed", "squared"])
def test_das_scores_match_the_definition(tmp_path, scheduler, readout):
    torch.manual_seed(0)
    model = tiny_unet()
    grad_dim = num_trainable_parameters(model)
    projector = make_projector("normal", grad_dim, 6, 3)
    x_train, train_ids = images(5, seed=1), np.array([0, 1, 2, 3, 4])
    x_test, test_ids = images(2, seed=2), np.array([7, 9])
    attrs = {
        "proj_kind": "normal",
        "proj_seed": 3,
        "proj_dim": 6,
        "output_fn": "mean",
        "timestep_norm": True,
        "timesteps": STEPS,
        "noise_seed": 0,
        "noise": "common",  # the noise keyed by ids here; any recorded scheme will do
        "noise_batch_size": 0,
        "noise_shard_rows": 0,
        "model_digest": "m",
    }
    options = GradientOptions(
        output_fn="mean", timesteps=STEPS, noise_seed=0, normalize_timesteps=True
    )
    for name, x, ids in (("train", x_train, train_ids), ("val", x_test, test_ids)):
        feats = extract_features(model, scheduler, QueryRows(x, ids), options, projector)
        _write(tmp_path / f"{name}.h5", feats, ids, {**attrs, "split": name})
    r = residual_profile(model, scheduler, QueryRows(x_train, train_ids), STEPS, 0).numpy()
    store.write_h5(
        tmp_path / "res.h5",
        {"residuals": r, "weights": das_weights(r), "ids": train_ids, "timesteps": STEPS},
        {
            "model_digest": "m",
            "noise_seed": 0,
            **{"noise": "common", "noise_batch_size": 0, "noise_shard_rows": 0},
            "timesteps": STEPS,
            "S": 4,
        },
    )
    config = {"methods": {"das": {"kind": "das", "readout": readout, "residual_timesteps": 250}}}
    params = validate_methods(config)["das"]
    inputs = {
        "train": [str(tmp_path / "train.h5")],
        "test": [str(tmp_path / "val.h5")],
        "residuals": [str(tmp_path / "res.h5")],
    }
    assert set(get_method("das").needs(params, 4, "val")) == set(inputs)
    job_params = {k: v for k, v in params.items() if k != "kind"}
    job = ScoreJob("das", "das", job_params, 4, "val", inputs, str(tmp_path / "s.h5"), LAMBDAS)
    get_method("das").score(job)
    scores = read_scores(tmp_path / "s.h5")
    assert scores.attrs["readout"] == readout

    model64 = tiny_unet().double()
    phi = slow_das_features(model64, scheduler, x_train.double(), train_ids, STEPS, projector)
    psi = slow_das_features(model64, scheduler, x_test.double(), test_ids, STEPS, projector)
    w = slow_weights(model64, scheduler, x_train, train_ids, STEPS)
    for index, lam in enumerate(LAMBDAS):
        tau = psi @ np.linalg.solve(phi.T @ phi + lam * np.eye(6), phi.T) * w[None, :]
        want = tau**2 if readout == "squared" else tau
        np.testing.assert_allclose(
            scores.scores[index], want, rtol=2e-3, atol=1e-6 * abs(want).max()
        )


def test_das_refuses_features_without_timestep_norm(tmp_path):
    attrs = {"proj_kind": "normal", "proj_seed": 0, "proj_dim": 2, "output_fn": "mean"}
    for name in ("train", "val"):
        _write(tmp_path / f"{name}.h5", np.ones((2, 2)), [0, 1], {**attrs, "split": name})
    params = validate_methods({"methods": {"d": {"kind": "das", "residual_weight": False}}})["d"]
    inputs = {"train": [str(tmp_path / "train.h5")], "test": [str(tmp_path / "val.h5")]}
    job_params = {k: v for k, v in params.items() if k != "kind"}
    job = ScoreJob("d", "das", job_params, 1, "val", inputs, str(tmp_path / "s.h5"), [1.0])
    with pytest.raises(FeatureMismatchError, match="timestep_norm"):
        get_method("das").score(job)
