"""Generation and measured outputs: per-sample reproducibility and batch independence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffattr.errors import ConfigError
from diffattr.measure import Measurement, measure_losses, timestep_grid
from diffattr.models import build_scheduler, build_unet
from diffattr.noise import sample_noise
from diffattr.queries import QueryRows
from diffattr.sampling import (
    DdimSettings,
    ddim_sample,
    image_grid,
    initial_noise,
    sample_generators,
    sample_seeds,
)
from tests.conftest import SCHEDULER


def _model(config):
    torch.manual_seed(0)
    model = build_unet(config, dropout=0.1).eval()
    return model, build_scheduler(SCHEDULER)


def test_sample_seeds_follow_the_reference_convention():
    assert sample_seeds(3, 2).tolist() == [2000, 2001, 2002]


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_one_sample_regenerates_alone(tiny_unet_config, eta):
    model, scheduler = _model(tiny_unet_config)
    seeds = sample_seeds(4, 0)
    four = DdimSettings(steps=4, eta=eta, batch_size=4)
    one = DdimSettings(steps=4, eta=eta, batch_size=1)
    together = ddim_sample(model, scheduler, seeds, four)["images"]
    alone = ddim_sample(model, scheduler, seeds[2:3], one)["images"]
    np.testing.assert_allclose(together[2], alone[0], atol=1e-5)
    again = ddim_sample(model, scheduler, seeds, four)["images"]
    assert np.array_equal(together, again)
    assert together.min() >= -1 and together.max() <= 1


def test_step_noise_is_drawn_per_sample(tiny_unet_config):
    # With η > 0 every step adds fresh noise: each sample's own, so a sample is the same whether
    # it shares its batch with the others or not, and it differs from the η = 0 sample.
    model, scheduler = _model(tiny_unet_config)
    seeds = sample_seeds(3, 1)
    stochastic = DdimSettings(steps=6, eta=1.0, batch_size=3)
    batched = ddim_sample(model, scheduler, seeds, stochastic)["images"]
    reversed_order = ddim_sample(model, scheduler, seeds[::-1].copy(), stochastic)["images"]
    np.testing.assert_allclose(batched, reversed_order[::-1], atol=1e-5)
    deterministic = ddim_sample(model, scheduler, seeds, DdimSettings(steps=6, batch_size=3))
    assert np.abs(batched - deterministic["images"]).max() > 1e-3


def test_initial_noise_is_per_seed():
    a = initial_noise(sample_generators(np.array([5, 6])), (1, 4, 4))
    b = initial_noise(sample_generators(np.array([6])), (1, 4, 4))
    assert torch.equal(a[1], b[0])


def test_trajectory_has_one_prediction_per_step(tiny_unet_config):
    model, scheduler = _model(tiny_unet_config)
    out = ddim_sample(model, scheduler, sample_seeds(2, 0), DdimSettings(steps=3), trajectory=True)
    assert out["x0_trajectory"].shape == (2, 3, 1, 8, 8)
    assert len(out["trajectory_timesteps"]) == 3


def test_bad_ddim_settings_are_refused():
    with pytest.raises(ConfigError, match=r"generation\.steps = 0 must be at least 1"):
        DdimSettings(steps=0)
    with pytest.raises(ConfigError, match="DdimSettings.batch_size = 0"):
        DdimSettings(batch_size=0)


def test_bad_measurements_and_rows_are_refused():
    with pytest.raises(ConfigError, match="Measurement.noise_seeds is empty"):
        Measurement(timesteps=[0], noise_seeds=[], purpose="m")
    with pytest.raises(ConfigError, match="QueryRows.ids has 2 rows for the 3 rows of x0"):
        QueryRows(np.zeros((3, 1, 8, 8)), [0, 1])


def test_image_grid_shape():
    grid = image_grid(np.zeros((5, 1, 8, 8), dtype=np.float32), columns=2)
    assert grid.shape == (24, 16) and grid.dtype == np.uint8


def test_timestep_grid():
    assert timestep_grid(10).tolist() == list(range(0, 1000, 100))
    assert len(timestep_grid(1000)) == 1000


def test_measured_loss_matches_direct_formula_and_ignores_batching(tiny_unet_config):
    model, scheduler = _model(tiny_unet_config)
    rng = np.random.default_rng(1)
    images = rng.uniform(-1, 1, (5, 1, 8, 8)).astype(np.float32)
    ids = np.array([10, 11, 12, 13, 14])
    grid = np.array([0, 500, 999])
    rows, measurement = (
        QueryRows(images, ids),
        Measurement(timesteps=grid, noise_seeds=[0, 1], purpose="test"),
    )
    batched = measure_losses(model, scheduler, rows, measurement, batch_size=5)
    single = measure_losses(model, scheduler, rows, measurement, batch_size=2)
    np.testing.assert_allclose(batched, single, rtol=1e-5)
    # Reversed order: each sample keeps its own noise.
    reverse = measure_losses(model, scheduler, QueryRows(images[::-1], ids[::-1]), measurement)
    np.testing.assert_allclose(batched, reverse[:, ::-1], rtol=1e-5)
    # Direct, one sample at a time.
    expected = np.zeros((2, 5))
    alphas = scheduler.alphas_cumprod.double()
    with torch.no_grad():
        for e, seed in enumerate([0, 1]):
            for j in range(5):
                for t in grid:
                    eps = sample_noise("test", seed, int(t), [ids[j]], (1, 8, 8))
                    a = float(alphas[t])
                    x_t = a**0.5 * torch.from_numpy(images[j : j + 1]) + (1 - a) ** 0.5 * eps
                    pred = model(x_t, torch.tensor([int(t)])).sample
                    expected[e, j] += float(((pred - eps) ** 2).mean()) / len(grid)
    np.testing.assert_allclose(batched, expected, rtol=1e-5)
    assert not np.allclose(batched[0], batched[1])


def _inline_loss(model, scheduler, rows: QueryRows, measurement: Measurement):
    """The measured loss as measure.py computed it before it took the output from
    diffattr.outputs: the oracle of bit-identity."""
    ids, grid, seeds = rows.ids, measurement.timesteps, measurement.noise_seeds
    alphas = scheduler.alphas_cumprod.to(torch.float64)
    x0 = torch.from_numpy(rows.x0)
    totals = np.zeros((len(seeds), len(ids)))
    with torch.no_grad():
        for e, seed in enumerate(seeds):
            for t in grid:
                a = float(alphas[int(t)])
                noise = sample_noise(measurement.purpose, seed, int(t), ids, x0.shape[1:])
                noisy = (a**0.5) * x0 + ((1 - a) ** 0.5) * noise
                eps = model(noisy, torch.full((len(ids),), int(t))).sample.float()
                totals[e] += ((eps - noise) ** 2).flatten(1).mean(1).double().numpy()
    return totals / len(grid)


def test_the_registered_loss_measures_the_inline_loss_bit_for_bit(tiny_unet_config):
    model, scheduler = _model(tiny_unet_config)
    images = np.random.default_rng(2).uniform(-1, 1, (4, 1, 8, 8)).astype(np.float32)
    rows = QueryRows(images, np.array([3, 1, 4, 5]))
    grid = np.array([0, 137, 612, 999])
    default = Measurement(timesteps=grid, noise_seeds=[0, 2], purpose="m")
    measured = measure_losses(model, scheduler, rows, default, batch_size=4)
    assert np.array_equal(measured, _inline_loss(model, scheduler, rows, default))
    named = Measurement(timesteps=grid, noise_seeds=[0, 2], purpose="m", output_fn="loss")
    assert np.array_equal(measured, measure_losses(model, scheduler, rows, named, batch_size=4))


def test_any_registered_output_function_is_measured(tiny_unet_config):
    from diffattr.outputs import get_output_fn

    model, scheduler = _model(tiny_unet_config)
    images = np.random.default_rng(3).uniform(-1, 1, (3, 1, 8, 8)).astype(np.float32)
    rows = QueryRows(images, np.array([7, 8, 9]))

    def measured(output_fn="loss", grid=(10, 500)):
        measurement = Measurement(
            timesteps=np.array(grid), noise_seeds=[0], purpose="m", output_fn=output_fn
        )
        return measure_losses(model, scheduler, rows, measurement)

    loss, elbo, square = measured(), measured("elbo_loss"), measured("square")
    assert not np.allclose(loss, elbo) and not np.allclose(loss, square)
    # a function, not only a name: the same value as its registered name
    assert np.array_equal(square, measured(get_output_fn("square")))
    # elbo_loss = w_t x loss per timestep, so with one timestep the ratio is w_t
    ratio = measured("elbo_loss", grid=[500]) / measured(grid=[500])
    from diffattr.outputs import elbo_weights

    np.testing.assert_allclose(ratio, float(elbo_weights(scheduler, torch.tensor([500]))[0]))
