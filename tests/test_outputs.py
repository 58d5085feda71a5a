"""Output functions f: each equals its formula; names, aliases and refusals."""

import pytest
import torch
from diffusers import DDPMScheduler

from diffattr.errors import ConfigError
from diffattr.outputs import (
    OUTPUT_ALIASES,
    OUTPUT_FUNCTIONS,
    canonical_name,
    elbo_weights,
    get_output_fn,
)


@pytest.fixture(scope="module")
def scheduler():
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")


@pytest.fixture(scope="module")
def tensors():
    g = torch.Generator().manual_seed(0)
    eps_pred = torch.randn(4, 3, 5, 5, generator=g)
    eps = torch.randn(4, 3, 5, 5, generator=g)
    timesteps = torch.tensor([0, 10, 500, 999])
    return eps_pred, eps, timesteps


def _formulas(eps_pred, eps, timesteps, scheduler):
    d = eps_pred[0].numel()
    pred = eps_pred.reshape(4, -1).double()
    diff = pred - eps.reshape(4, -1).double()
    beta = scheduler.betas.double()[timesteps]
    abar = torch.cumprod(1 - scheduler.betas.double(), 0)[timesteps]
    weight = beta / (2 * (1 - beta) * (1 - abar))
    return {
        "loss": (diff**2).sum(1) / d,
        "square": (pred**2).sum(1) / d,
        "mean": pred.sum(1) / d,
        "l1": pred.abs().sum(1),
        "l2": (pred**2).sum(1).sqrt(),
        "linf": pred.abs().max(1).values,
        "elbo_loss": weight * (diff**2).sum(1) / d,
    }


def test_canonical_names():
    assert set(OUTPUT_FUNCTIONS) == {"loss", "square", "mean", "l1", "l2", "linf", "elbo_loss"}


@pytest.mark.parametrize("name", ["loss", "square", "mean", "l1", "l2", "linf", "elbo_loss"])
def test_each_function_equals_formula(name, tensors, scheduler):
    eps_pred, eps, timesteps = tensors
    out = get_output_fn(name)(eps_pred, eps, timesteps, scheduler)
    assert out.shape == (4,)
    assert out.dtype == torch.float32
    want = _formulas(eps_pred, eps, timesteps, scheduler)[name]
    torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=1e-6)


def test_half_input_gives_float32(tensors, scheduler):
    eps_pred, eps, timesteps = tensors
    out = get_output_fn("loss")(eps_pred.half(), eps.half(), timesteps, scheduler)
    assert out.dtype == torch.float32


def test_elbo_weight_at_first_step(scheduler):
    # 1 - abar_0 = beta_0, so w_0 = 1 / (2 alpha_0)
    w = elbo_weights(scheduler, torch.tensor([0]))
    torch.testing.assert_close(w, 1 / (2 * (1 - scheduler.betas.double()[:1])), rtol=1e-12, atol=0)


def test_elbo_weight_out_of_range(scheduler):
    with pytest.raises(ConfigError, match="1000"):
        elbo_weights(scheduler, torch.tensor([1000]))


@pytest.mark.parametrize(
    "alias,name",
    [
        ("mean-squared-l2-norm", "square"),
        ("l1-norm", "l1"),
        ("l2-norm", "l2"),
        ("linf-norm", "linf"),
        ("weighted-mse", "elbo_loss"),
    ],
)
def test_aliases(alias, name):
    assert OUTPUT_ALIASES[alias] == name
    assert canonical_name(alias) == name
    assert get_output_fn(alias) is get_output_fn(name)


def test_unknown_name_lists_valid_names():
    with pytest.raises(ConfigError) as info:
        get_output_fn("squared")
    message = str(info.value)
    assert "'squared'" in message
    for name in OUTPUT_FUNCTIONS:
        assert name in message
