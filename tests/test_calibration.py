"""The structured projection's ``energy`` allocation: its calibration against a slow per-row
loop, the layout it gives, its provenance and its errors, and exact square factors."""

import math

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler
from torch import nn

from diffattr.calibration import (
    CALIBRATION_K,
    CALIBRATION_ROWS,
    calibration_energies,
    train_calibration,
)
from diffattr.errors import ConfigError
from diffattr.features import GradientOptions, extract_features, select_timesteps
from diffattr.models import DiffusionModel
from diffattr.noise import sample_noise
from diffattr.outputs import get_output_fn
from diffattr.projection_structured import (
    Split,
    allocate,
    build_layout,
    calibration_shares,
    layout_groups,
    make_feature_projector,
    make_structured_projector,
    read_layout,
)
from diffattr.queries import QueryRows
from diffattr.settings import Runtime
from tests.numerics import assert_close_at_row_scale
from tests.test_projection_structured import tiny_unet


@pytest.fixture(scope="module")
def scheduler():
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")


def slow_energies(model, scheduler, x0, ids, output_fn, seed):
    """Per group, Σ_rows ‖mean_t ∇_θ f‖², one forward and backward per (row, timestep)."""
    fn = get_output_fn(output_fn)
    params = dict(model.named_parameters())
    steps = select_timesteps(CALIBRATION_K, "uniform", 1000)
    groups = layout_groups(model)
    totals = np.zeros(len(groups))
    for i, key in enumerate(ids):
        mean = {name: torch.zeros_like(p) for name, p in params.items()}
        for t in steps:
            eps = sample_noise("features", seed, t, [key], x0.shape[1:]).to(x0.dtype)
            abar = scheduler.alphas_cumprod[t].to(x0.dtype)
            x_t = abar.sqrt() * x0[i : i + 1] + (1 - abar).sqrt() * eps
            out = fn(model(x_t, torch.tensor([t])).sample, eps, torch.tensor([t]), scheduler)
            grads = torch.autograd.grad(out.sum(), list(params.values()))
            for name, g in zip(params, grads, strict=True):
                mean[name] += g / len(steps)
        for g, (_, names) in enumerate(groups):
            totals[g] += sum(float(mean[n].pow(2).sum()) for n in names)
    return totals


@pytest.mark.parametrize("output_fn", ["square", "loss"])
def test_calibration_energies_equal_a_slow_loop(scheduler, output_fn):
    model = tiny_unet(seed=2).double()
    x0 = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    ids = np.array([7, 3, 11, 0, 5])
    groups = layout_groups(model)
    ours = calibration_energies(model, scheduler, QueryRows(x0, ids), output_fn, groups, seed=9)
    expected = slow_energies(model, scheduler, x0, ids, output_fn, seed=9)
    np.testing.assert_allclose(ours, expected, rtol=1e-6)
    # the shares are far from the parameter shares: the last convolution's is the point
    shares = calibration_shares(ours)
    assert math.isclose(sum(shares), 1.0, abs_tol=1e-2)
    assert all(f"{s:.3g}" == f"{s}" or s == 0 for s in shares)


def test_energy_layout_follows_the_shares_and_is_recorded():
    model = tiny_unet()
    groups = layout_groups(model)
    sizes = [sum(dict(model.named_parameters())[n].numel() for n in names) for _, names in groups]
    energies = [1.0] * len(groups)
    energies[-2] = 500.0  # the group before the rest group holds most of the energy
    layout = build_layout(model, 256, "energy", energies)
    dims = [b.dim for b in layout.blocks] + [layout.rest_dim]
    assert dims == allocate(sizes, energies, 256)
    assert dims[-2] == sizes[-2] and sum(dims) == 256  # capped at the group's parameters
    assert dims != [b.dim for b in build_layout(model, 256, "proportional").blocks] + [
        build_layout(model, 256, "proportional").rest_dim
    ]
    proportional = build_layout(model, 256, "proportional")
    assert proportional.digest() != layout.digest()
    assert proportional.energies is None and "energies" not in proportional.as_json()
    recorded = read_layout({"proj_layout": layout.as_json()})
    assert recorded["energies"] == energies and recorded["allocation"] == "energy"
    assert recorded["version"] == 2
    # other energies, another layout and digest
    energies[0] = 500.0
    assert build_layout(model, 256, "energy", energies).digest() != layout.digest()


@pytest.mark.parametrize(
    "energies, shown",
    [(None, "None"), ([1.0, 2.0], "[1.0, 2.0]"), ("bad", "'b'"), ("nan", "nan"), ("neg", "-1.0")],
)
def test_bad_energies_are_named(energies, shown):
    model = tiny_unet()
    count = len(layout_groups(model))
    if energies == "nan":
        energies = [float("nan")] + [1.0] * (count - 1)
    elif energies == "neg":
        energies = [-1.0] + [1.0] * (count - 1)
    elif energies == "bad":
        energies = list("b" * count)
    with pytest.raises(ConfigError, match=f"needs {count} finite, non-negative") as info:
        build_layout(model, 128, "energy", energies)
    assert shown in str(info.value)


def test_energy_without_calibration_is_an_error():
    with pytest.raises(ConfigError, match="'energy' is calibrated on training rows"):
        make_structured_projector(tiny_unet(), 128, seed=1, split="energy")
    # a dense projection never calls the calibration
    called = []
    split = Split("energy", called.append)
    dense = make_feature_projector(tiny_unet(), 16, 1, projection="dense", split=split)
    assert "structured" not in str(dense.describe()) and called == []


def test_calibration_is_the_same_for_any_producer_batching(scheduler):
    """Train and query jobs, Journey-TRAK and the API calibrate on the same rows: the layout
    depends on neither how they batch nor how many rows they were given beyond the first 16."""
    unet = tiny_unet(seed=5)
    model = DiffusionModel(unet, scheduler)
    images = np.random.default_rng(0).uniform(-1, 1, (CALIBRATION_ROWS + 4, 1, 8, 8))
    images = images.astype(np.float32)
    ids = np.arange(100, 100 + len(images))
    a = make_structured_projector(
        unet,
        200,
        3,
        split=Split("energy", train_calibration(model, images, ids, "loss", 3)),
    )
    b = make_structured_projector(
        unet,
        200,
        3,
        split=Split("energy", train_calibration(model, images[:CALIBRATION_ROWS], ids, "loss", 3)),
    )
    assert a.describe() == b.describe()
    c = make_structured_projector(
        unet,
        200,
        3,
        split=Split("energy", train_calibration(model, images, ids, "square", 3)),
    )
    assert c.layout.digest() != a.layout.digest()  # another output function, other energies


def test_square_factors_are_exact(scheduler):
    """A layer kept whole (z = P) has identity factors: its block kernel is exactly Z·⟨g, h⟩."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.Tanh(), nn.Linear(2, 1)).double()
    total = sum(p.numel() for p in model.parameters())
    projector = make_structured_projector(model, total, seed=4)  # every group kept whole
    dense = projector.dense_equivalent(model)
    np.testing.assert_allclose((dense.T @ dense).numpy(), total * np.eye(total), atol=1e-12)


def test_energy_features_equal_their_dense_equivalent(scheduler):
    """The energy layout changes the split only: features are still the explicit projection of
    the mean gradient (the structured kernel itself is tested in test_projection_structured)."""
    unet = tiny_unet(seed=1).double()
    model = DiffusionModel(unet, scheduler)
    images = np.random.default_rng(1).uniform(-1, 1, (6, 1, 8, 8))
    ids = np.arange(6)
    projector = make_structured_projector(
        unet, 96, 2, split=Split("energy", train_calibration(model, images, ids, "loss", 2))
    )
    x0 = torch.as_tensor(images)
    options = GradientOptions(output_fn="loss", timesteps=[10, 600], noise_seed=0)
    ours = extract_features(
        unet, scheduler, QueryRows(x0, ids), options, projector, Runtime(batch_size=4)
    )
    from diffattr.features import mean_gradients

    expected = mean_gradients(unet, scheduler, QueryRows(x0, ids), options)
    expected = expected @ projector.dense_equivalent(unet)
    assert_close_at_row_scale(ours, expected.numpy(), rtol=1e-5)


def test_features_of_two_energy_layouts_never_combine():
    """Same kind, seed and Z, other calibration: the layout digest tells them apart."""
    from diffattr import store
    from diffattr.errors import FeatureMismatchError

    model = tiny_unet()
    count = len(layout_groups(model))
    attrs = []
    for heavy in (0, count - 1):
        energies = [1.0] * count
        energies[heavy] = 50.0
        projector = make_structured_projector(
            model, 128, 3, split=Split("energy", lambda groups, e=energies: e)
        )
        described = projector.describe()
        attrs.append({f"proj_{k}" if not k.startswith("proj") else k: v
                      for k, v in described.items()})  # fmt: skip
    assert attrs[0]["proj_kind"] == attrs[1]["proj_kind"]
    keys = store.with_optional_keys(list(store.FEATURE_CHECK_KEYS), *attrs)
    assert keys[-1] == "proj_layout_digest"
    store.require_same(attrs[0], attrs[0], keys, "same")
    with pytest.raises(FeatureMismatchError, match="proj_layout_digest"):
        store.require_same(attrs[0], attrs[1], keys, "train vs gen")
    # a dense file against a structured one: the missing layout is a mismatch too
    dense = {k: v for k, v in attrs[0].items() if k != "proj_layout_digest"}
    with pytest.raises(FeatureMismatchError, match="proj_layout_digest"):
        store.require_same(dense, attrs[1], store.with_optional_keys([], dense, attrs[1]), "x")


def test_feature_jobs_calibrate_on_the_first_rows_of_the_dataset(scheduler, tmp_path):
    """``dataset_calibration`` (every feature job's) reads only the first 16 train rows and
    gives what ``train_calibration`` gives on them."""
    from diffattr.data import load_split, prepare_dataset
    from diffattr.jobs.features import dataset_calibration

    out = tmp_path / "ds.h5"
    prepare_dataset({"source": "digits", "train_size": 40, "val_size": 10}, out)
    model = DiffusionModel(tiny_unet(seed=4), scheduler)
    groups = layout_groups(model.denoiser)
    ours = dataset_calibration(model, str(out), "square", 5)(groups)
    whole = load_split(out, "train")
    expected = train_calibration(model, whole.images, whole.ids, "square", 5)(groups)
    np.testing.assert_allclose(ours, expected, rtol=1e-12)
    shorter = train_calibration(model, whole.images[:8], whole.ids[:8], "square", 5)(groups)
    assert not np.allclose(ours, shorter)
