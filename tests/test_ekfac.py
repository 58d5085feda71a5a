"""EK-FAC influence through kronfluence: its scores on a tiny UNet against a direct computation
from the fitted factors, and with the identity preconditioner against plain gradient dot
products (autograd per sample, no kronfluence hooks)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

pytest.importorskip("kronfluence")

from diffattr import ekfac  # noqa: E402
from diffattr.noise import sample_noise  # noqa: E402
from tests.test_features import images, tiny_cond_unet, tiny_unet  # noqa: E402

STEPS = [100, 600]
FACTOR_STEPS = [0, 250, 500, 750]


@pytest.fixture(scope="module")
def scheduler():
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def module_gradients(model, scheduler, samples, modules, steps=STEPS):
    """Per sample of ``samples`` (x0, ids, cond or None), {module: [out, in(+1 bias)]} of
    (1/K) Σ_t mean (ε̂ − ε)², by autograd."""
    x0, ids, cond = samples
    named = dict(model.named_modules())
    out = []
    for i, sample_id in enumerate(ids):
        model.zero_grad()
        loss = 0
        for t in steps:
            abar = scheduler.alphas_cumprod.double()[t]
            eps = sample_noise("features", 0, t, [sample_id], x0.shape[1:]).double()
            x_t = abar.sqrt() * x0[i : i + 1] + (1 - abar).sqrt() * eps
            kwargs = {} if cond is None else {"encoder_hidden_states": cond[i : i + 1]}
            loss = loss + (model(x_t, torch.tensor([t]), **kwargs).sample - eps).pow(2).mean()
        (loss / len(steps)).backward()
        grads = {}
        for name in modules:
            module = named[name]
            g = module.weight.grad.reshape(module.weight.shape[0], -1)
            if module.bias is not None:
                g = torch.cat([g, module.bias.grad[:, None]], dim=1)
            grads[name] = g.clone()
        out.append(grads)
    model.zero_grad()
    return out


def _fit(tmp_path, scheduler, strategy, x, ids):
    model = tiny_unet().double()
    data = ekfac.SampleDataset(x, ids, timesteps=FACTOR_STEPS)
    out = tmp_path / strategy
    loss = ekfac.DiffusionLoss(scheduler, noise_seed=0, batch_size=6)
    provenance = ekfac.fit_factors(model, loss, data, out, strategy)
    return model, out, provenance


def _scores(scheduler, out, train, queries, dampings, model=None):
    """Scores of ``queries`` against ``train`` ((x0, ids, cond or None) each) by kronfluence."""
    return ekfac.influence_scores(
        tiny_unet().double() if model is None else model,
        ekfac.DiffusionLoss(scheduler, noise_seed=0, batch_size=3, timesteps=STEPS),
        out,
        ekfac.SampleDataset(*train),
        ekfac.SampleDataset(*queries),
        dampings,
    )


def test_tracked_modules_cover_linear_and_conv_only():
    model = tiny_unet()
    modules, uncovered = ekfac.tracked_modules(model)
    assert modules and all(
        isinstance(dict(model.named_modules())[m], (torch.nn.Linear, torch.nn.Conv2d))
        for m in modules
    )
    assert uncovered and all("norm" in name for name in uncovered)  # GroupNorm affine params


def test_identity_preconditioner_is_a_gradient_dot_product(tmp_path, scheduler):
    x, ids = images(5, seed=1).double(), np.arange(5)
    xq, qids = images(2, seed=2).double(), np.array([10, 11])
    _, out, provenance = _fit(tmp_path, scheduler, "identity", x, ids)
    got = _scores(scheduler, out, (x, ids, None), (xq, qids, None), [0.0])[0]
    modules = provenance["tracked_modules"]
    gi = module_gradients(tiny_unet().double(), scheduler, (x, ids, None), modules)
    gq = module_gradients(tiny_unet().double(), scheduler, (xq, qids, None), modules)
    want = np.array([[sum(float((q[m] * g[m]).sum()) for m in modules) for g in gi] for q in gq])
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-12 * abs(want).max())


def test_ekfac_scores_match_the_fitted_factors(tmp_path, scheduler):
    from kronfluence.utils.save import load_file

    x, ids = images(6, seed=1).double(), np.arange(6)
    xq, qids = images(2, seed=2).double(), np.array([10, 11])
    _, out, provenance = _fit(tmp_path, scheduler, "ekfac", x, ids)
    dampings = [1e-3, 1e-1]
    got = _scores(scheduler, out, (x, ids, None), (xq, qids, None), dampings)
    modules = provenance["tracked_modules"]
    qa = load_file(out / "activation_eigenvectors.safetensors")
    qg = load_file(out / "gradient_eigenvectors.safetensors")
    lam = load_file(out / "lambda_matrix.safetensors")
    count = load_file(out / "num_lambda_processed.safetensors")
    gi = module_gradients(tiny_unet().double(), scheduler, (x, ids, None), modules)
    gq = module_gradients(tiny_unet().double(), scheduler, (xq, qids, None), modules)
    for index, damping in enumerate(dampings):
        want = np.zeros((2, 6))
        for m in modules:
            A, G = qa[m].double(), qg[m].double()
            L = lam[m].double() / count[m].double() + damping
            for a, q in enumerate(gq):
                pre = G @ ((G.T @ q[m] @ A) / L) @ A.T
                for b, g in enumerate(gi):
                    want[a, b] += float((pre * g[m]).sum())
        np.testing.assert_allclose(got[index], want, rtol=1e-6, atol=1e-10 * abs(want).max())
    assert not np.allclose(got[0], got[1])  # the damping matters


def test_conditional_unet_with_frozen_parameters(tmp_path, scheduler):
    """The SD-LoRA path: a conditional UNet, captions' embeddings in the batch, and only the
    trainable modules tracked (here: the cross-attention projections)."""

    def model():
        unet = tiny_cond_unet().double()
        for name, p in unet.named_parameters():
            p.requires_grad_("attn2" in name)
        return unet

    x, ids = images(3, seed=1).double(), np.arange(3)
    xq, qids = images(2, seed=2).double(), np.array([5, 6])
    gen = torch.Generator().manual_seed(4)
    cond = torch.randn(3, 5, 6, generator=gen, dtype=torch.float64)
    qcond = torch.randn(2, 5, 6, generator=gen, dtype=torch.float64)
    modules, _ = ekfac.tracked_modules(model())
    assert modules and all("attn2" in m for m in modules)
    out = tmp_path / "identity"
    data = ekfac.SampleDataset(x, ids, cond, timesteps=FACTOR_STEPS)
    ekfac.fit_factors(
        model(), ekfac.DiffusionLoss(scheduler, 0, batch_size=6), data, out, "identity"
    )
    got = _scores(scheduler, out, (x, ids, cond), (xq, qids, qcond), [0.0], model=model())[0]
    gi = module_gradients(model(), scheduler, (x, ids, cond), modules)
    gq = module_gradients(model(), scheduler, (xq, qids, qcond), modules)
    want = np.array([[sum(float((q[m] * g[m]).sum()) for m in modules) for g in gi] for q in gq])
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-12 * abs(want).max())


def test_loss_and_influence_settings_refuse_bad_values_by_name(scheduler):
    from diffattr.errors import ConfigError
    from diffattr.methods.ekfac import InfluenceSettings
    from diffattr.settings import FeatureNoiseSettings

    with pytest.raises(ConfigError, match=r"DiffusionLoss\.batch_size = 0 .* integer >= 1"):
        ekfac.DiffusionLoss(scheduler, noise_seed=0, batch_size=0)
    with pytest.raises(ConfigError, match=r"DiffusionLoss\.noise_seed = '0' .* integer"):
        ekfac.DiffusionLoss(scheduler, noise_seed="0", batch_size=2)
    valid = {
        "K": 2,
        "t_strategy": "uniform",
        "dampings": [1e-3, None],
        "noise": FeatureNoiseSettings(),
    }
    assert InfluenceSettings(**valid).dampings == (1e-3, None)
    for name, value, words in [
        ("K", 0, "integer >= 1"),
        ("t_strategy", "random", "'uniform'"),
        ("dampings", [], "non-empty list"),
        ("dampings", [-1.0], "numbers >= 0"),
        ("noise", "common", "FeatureNoiseSettings"),
    ]:
        with pytest.raises(ConfigError, match=rf"InfluenceSettings\.{name} = .*{words}"):
            InfluenceSettings(**{**valid, name: value})
