"""Per-sample gradient features: exactness against a per-sample backward loop, batch/order
independence, conditional UNets, frozen parameters, timestep selection and HDF5 shards."""

import dataclasses
import io

import h5py
import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, UNet2DConditionModel, UNet2DModel

from diffattr.errors import ConfigError, CorruptFileError, FeatureMismatchError
from diffattr.features import (
    GradientOptions,
    extract_features,
    mean_gradients,
    merge_feature_shards,
    num_trainable_parameters,
    per_sample_gradients,
    select_timesteps,
    timesteps_per_call,
    trainable_parameters,
    vmap_safe_attention,
    write_features,
)
from diffattr.files import read_features
from diffattr.noise import feature_noise_keys, sample_noise
from diffattr.outputs import get_output_fn
from diffattr.projection import make_projector
from diffattr.queries import QueryRows
from diffattr.settings import Runtime
from tests.numerics import assert_close_at_row_scale


def tiny_unet(seed=0, dropout=0.0):
    torch.manual_seed(seed)
    return UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=8,
        dropout=dropout,
    ).eval()


def tiny_cond_unet(seed=0):
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=6,
        attention_head_dim=4,
    ).eval()


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models run faster on one thread, above all on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def scheduler():
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")


def images(n, seed=1):
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def slow_gradients(model, scheduler, inputs, t, f_name, seed):
    """One backward pass per sample, with x_t written out by hand (``per_sample_gradients``'s
    arguments: sample i's noise key is ``inputs.noise_keys[i]``, else its id)."""
    x0, cond = inputs.x0, inputs.cond
    keys = inputs.ids if inputs.noise_keys is None else inputs.noise_keys
    fn = get_output_fn(f_name)
    params = trainable_parameters(model)
    dtype = next(iter(params.values())).dtype
    abar = scheduler.alphas_cumprod.to(dtype)[t]
    rows = []
    for i, key in enumerate(keys):
        model.zero_grad()
        eps = sample_noise("features", seed, t, [key], x0.shape[1:]).to(dtype)
        x_t = abar.sqrt() * x0[i : i + 1].to(dtype) + (1 - abar).sqrt() * eps
        kwargs = {} if cond is None else {"encoder_hidden_states": cond[i : i + 1].to(dtype)}
        eps_pred = model(x_t, torch.tensor([t]), **kwargs).sample
        fn(eps_pred, eps, torch.tensor([t]), scheduler).sum().backward()
        rows.append(torch.cat([p.grad.reshape(-1) for p in params.values()]))
    model.zero_grad()
    return torch.stack(rows)


@pytest.mark.parametrize("f_name,t", [("loss", 0), ("square", 500), ("elbo_loss", 999)])
def test_gradients_match_per_sample_backward(scheduler, f_name, t):
    model = tiny_unet().double()
    x0, ids = images(3), [4, 0, 17]
    fast = per_sample_gradients(model, scheduler, QueryRows(x0, ids), t, f_name, noise_seed=0)
    assert fast.shape == (3, num_trainable_parameters(model))
    assert fast.dtype == torch.float64
    # Same attention arithmetic as the vmap path (diffusers' AttnProcessor upcasts the softmax
    # to float32), so float64 results agree to rounding.
    with vmap_safe_attention(model):
        slow = slow_gradients(model, scheduler, QueryRows(x0, ids), t, f_name, 0)
    torch.testing.assert_close(fast, slow, rtol=1e-9, atol=1e-12)
    # Against the model's default SDPA attention: equal up to that float32 softmax.
    sdpa = slow_gradients(model, scheduler, QueryRows(x0, ids), t, f_name, 0)
    torch.testing.assert_close(fast, sdpa, rtol=1e-6, atol=1e-8)


def test_model_state_restored_and_dropout_off(scheduler):
    from diffusers.models.attention_processor import AttnProcessor2_0

    model = tiny_unet(dropout=0.5).double()
    model.train()
    inputs = QueryRows(images(2), [0, 1])
    a = per_sample_gradients(model, scheduler, inputs, 100, "loss", noise_seed=0)
    b = per_sample_gradients(model, scheduler, inputs, 100, "loss", noise_seed=0)
    torch.testing.assert_close(a, b, rtol=0, atol=0)  # no dropout noise
    assert model.training
    processors = [m.get_processor() for m in model.modules() if hasattr(m, "get_processor")]
    assert processors and all(type(p) is AttnProcessor2_0 for p in processors)
    model.eval()
    torch.testing.assert_close(a, slow_gradients(model, scheduler, inputs, 100, "loss", 0))


def test_noise_seed_changes_gradients(scheduler):
    model = tiny_unet()
    inputs = QueryRows(images(2), [0, 1])
    a = per_sample_gradients(model, scheduler, inputs, 300, "loss", noise_seed=0)
    b = per_sample_gradients(model, scheduler, inputs, 300, "loss", noise_seed=1)
    assert not torch.allclose(a, b)


def test_conditional_unet_with_frozen_parameters(scheduler):
    model = tiny_cond_unet().double()
    for name, param in model.named_parameters():
        param.requires_grad_("attn2" in name)  # only the cross-attention layers train
    trainable = trainable_parameters(model)
    assert trainable and all("attn2" in name for name in trainable)
    P = sum(p.numel() for p in trainable.values())
    assert P == num_trainable_parameters(model) < sum(p.numel() for p in model.parameters())
    x0, ids = images(2), [3, 8]
    cond = torch.randn(2, 5, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    inputs = QueryRows(x0, ids, cond=cond)
    fast = per_sample_gradients(model, scheduler, inputs, 250, "square", 0)
    assert fast.shape == (2, P)
    with vmap_safe_attention(model):
        slow = slow_gradients(model, scheduler, inputs, 250, "square", 0)
    torch.testing.assert_close(fast, slow, rtol=1e-9, atol=1e-12)
    flipped = QueryRows(x0, ids, cond=cond.flip(0))
    other = per_sample_gradients(model, scheduler, flipped, 250, "square", 0)
    assert not torch.allclose(fast, other)


def test_lora_adapters_only(scheduler):
    peft = pytest.importorskip("peft")
    model = tiny_cond_unet().double().requires_grad_(False)
    config = peft.LoraConfig(
        r=2,
        lora_alpha=2,
        init_lora_weights="gaussian",
        target_modules=["to_q", "to_k", "to_v", "to_out.0"],
    )
    model.add_adapter(config)
    trainable = trainable_parameters(model)
    assert trainable and all("lora_" in name for name in trainable)
    x0, ids = images(2), [3, 8]
    cond = torch.randn(2, 5, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    inputs = QueryRows(x0, ids, cond=cond)
    fast = per_sample_gradients(model, scheduler, inputs, 250, "loss", 0)
    assert fast.shape == (2, num_trainable_parameters(model))
    with vmap_safe_attention(model):
        slow = slow_gradients(model, scheduler, inputs, 250, "loss", 0)
    torch.testing.assert_close(fast, slow, rtol=1e-9, atol=1e-12)


def test_no_trainable_parameters(scheduler):
    model = tiny_unet().requires_grad_(False)
    with pytest.raises(ConfigError, match="no trainable parameters"):
        per_sample_gradients(model, scheduler, QueryRows(images(1), [0]), 0, "loss", 0)


def test_bad_timestep(scheduler):
    with pytest.raises(ConfigError, match="0..999"):
        per_sample_gradients(tiny_unet(), scheduler, QueryRows(images(1), [0]), 1000, "loss", 0)


def _features(model, scheduler, inputs, batch_size, progress=None):
    proj = make_projector("normal", num_trainable_parameters(model), 16, seed=42)
    options = GradientOptions(output_fn="square", timesteps=[0, 400], noise_seed=0)
    runtime = Runtime(batch_size=batch_size, progress=progress)
    return extract_features(model, scheduler, inputs, options, proj, runtime)


def test_features_independent_of_batch_size_and_order(scheduler):
    model = tiny_unet()
    x, ids = images(5), np.array([10, 11, 12, 13, 14])
    inputs = QueryRows(x, ids)
    one = _features(model, scheduler, inputs, 1)
    assert one.shape == (5, 16) and one.dtype == np.float32
    np.testing.assert_allclose(_features(model, scheduler, inputs, 3), one, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_features(model, scheduler, inputs, 5), one, rtol=1e-5, atol=1e-5)
    perm = np.array([3, 0, 4, 1, 2])
    shuffled = _features(model, scheduler, QueryRows(x[perm].numpy(), ids[perm]), 2)
    np.testing.assert_allclose(shuffled, one[perm], rtol=1e-5, atol=1e-5)


def _split_keys(scheme, split, ids):
    return feature_noise_keys(scheme, split, ids, np.arange(len(ids)), batch_size=2, shard_rows=4)


@pytest.mark.parametrize("scheme", ["independent", "reference", "common"])
def test_noise_schemes_independent_of_batch_size_and_order(scheduler, scheme):
    model = tiny_unet()
    x, ids = images(5), np.array([10, 11, 12, 13, 14])
    keys = _split_keys(scheme, "train", ids)
    inputs = QueryRows(x, ids, noise_keys=keys)
    one = _features(model, scheduler, inputs, 1)
    np.testing.assert_allclose(_features(model, scheduler, inputs, 3), one, rtol=1e-5, atol=1e-5)
    perm = np.array([3, 0, 4, 1, 2])
    permuted = QueryRows(x[perm].numpy(), ids[perm], noise_keys=keys[perm])
    shuffled = _features(model, scheduler, permuted, 2)
    np.testing.assert_allclose(shuffled, one[perm], rtol=1e-5, atol=1e-5)


def test_training_row_and_query_share_noise_only_under_common(scheduler):
    """The same image with the same id as a training row and as a gen query: equal features
    exactly when the noise is shared (common), different under independent noise."""
    model = tiny_unet()
    x, ids = images(3), np.array([0, 1, 2])

    def feats(scheme, split):
        inputs = QueryRows(x, ids, noise_keys=_split_keys(scheme, split, ids))
        return _features(model, scheduler, inputs, 3)

    for scheme in ("independent", "common"):
        train, gen = feats(scheme, "train"), feats(scheme, "gen")
        same = np.isclose(train, gen, rtol=1e-6, atol=1e-7).all(axis=1)
        assert same.tolist() == [scheme == "common"] * 3, scheme
    # common: every sample sees the same ε at each timestep (checked against a slow loop)
    keys = _split_keys("common", "val", ids)
    options = GradientOptions(output_fn="loss", timesteps=[300], noise_seed=0)
    got = mean_gradients(model, scheduler, QueryRows(x, ids, noise_keys=keys), options)
    shared = slow_gradients(
        model, scheduler, QueryRows(x, ids, noise_keys=[keys[0]] * 3), 300, "loss", 0
    )
    assert_close_at_row_scale(got.numpy(), shared.numpy(), rtol=1e-5)


def test_noise_keys_must_match_the_batch(scheduler):
    with pytest.raises(ConfigError, match="noise_keys has 1 rows for the 2 rows"):
        QueryRows(images(2), [0, 1], noise_keys=[1])
    options = GradientOptions(output_fn="loss", timesteps=[3], noise_seed=0)
    inputs = QueryRows(images(2), [0, 1], noise_keys=[[1, 2], [3, 4]])  # two keys per row
    with pytest.raises(ConfigError, match="one key per sample"):
        mean_gradients(tiny_unet(), scheduler, inputs, options)


def test_features_are_projected_mean_gradient(scheduler):
    model = tiny_unet().double()
    x, ids = images(2), [5, 6]
    P = num_trainable_parameters(model)
    proj = make_projector("identity", P, P, seed=0)
    inputs = QueryRows(x, ids)
    options = GradientOptions(output_fn="loss", timesteps=[0, 10, 20], noise_seed=0)
    feats = extract_features(model, scheduler, inputs, options, proj)
    mean = sum(per_sample_gradients(model, scheduler, inputs, t, "loss", 0) for t in (0, 10, 20))
    np.testing.assert_allclose(feats, (mean / 3).float().numpy(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("max_evaluations", [1, 4, 512])
def test_mean_gradients_equal_mean_of_per_timestep_gradients(scheduler, max_evaluations):
    model = tiny_cond_unet().double()
    x0, ids, steps = images(2), [3, 8], [0, 250, 999]
    cond = torch.randn(2, 5, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    inputs = QueryRows(x0, ids, cond=cond)
    options = GradientOptions(
        output_fn="elbo_loss", timesteps=steps, noise_seed=0, max_evaluations=max_evaluations
    )
    fused = mean_gradients(model, scheduler, inputs, options)
    with vmap_safe_attention(model):
        slow = sum(slow_gradients(model, scheduler, inputs, t, "elbo_loss", 0) for t in steps)
    torch.testing.assert_close(fused, slow / 3, rtol=1e-9, atol=1e-12)


def test_timesteps_per_call_respects_evaluations_and_memory():
    assert timesteps_per_call(50, 512) == 10
    assert timesteps_per_call(600, 512) == 1
    assert timesteps_per_call(50, 512, probe_bytes=10, available_bytes=1000) == 10
    assert timesteps_per_call(32, 512, probe_bytes=10 << 30, available_bytes=70 << 30) == 3
    assert timesteps_per_call(32, 512, probe_bytes=10 << 30, available_bytes=5 << 30) == 1


def test_progress_reporting(scheduler):
    model = tiny_unet()
    calls = []
    inputs = QueryRows(images(3), [0, 1, 2])
    _features(model, scheduler, inputs, 2, progress=lambda d, n: calls.append((d, n)))
    assert calls == [(2, 3), (3, 3)]
    stream = io.StringIO()
    _features(model, scheduler, inputs, 2, progress=stream)
    assert "3/3" in stream.getvalue()


def test_projector_dimension_must_match(scheduler):
    model = tiny_unet()
    proj = make_projector("normal", 10, 4, seed=0)
    with pytest.raises(ConfigError, match="grad_dim=10"):
        options = GradientOptions(output_fn="loss", timesteps=[0], noise_seed=0)
        extract_features(model, scheduler, QueryRows(images(1), [0]), options, proj)


def test_select_timesteps():
    assert select_timesteps(10, "uniform") == list(range(0, 1000, 100))
    assert select_timesteps(1000, "uniform") == list(range(1000))
    assert select_timesteps(5, "cumulative") == [0, 1, 2, 3, 4]
    with pytest.raises(ConfigError, match="strategy"):
        select_timesteps(10, "random")
    with pytest.raises(ConfigError, match="1..1000"):
        select_timesteps(0, "uniform")
    with pytest.raises(ConfigError, match="1001"):
        select_timesteps(1001, "cumulative")
    with pytest.raises(ConfigError, match="divide"):
        select_timesteps(3, "uniform")


ATTRS = {"output_fn": "square", "timesteps": [0, 100], "K": 2, "proj_seed": 42, "proj_dim": 4}


def test_write_and_merge_shards(tmp_path):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((2, 4))
    write_features(tmp_path / "a.h5", a, [0, 1, 2], {**ATTRS, "split": 0})
    write_features(tmp_path / "b.h5", b, [3, 4], {**ATTRS, "split": 1})
    with h5py.File(tmp_path / "a.h5") as handle:
        assert handle["features"].dtype == np.float32 and handle["ids"].dtype == np.int64
    merge_feature_shards([tmp_path / "a.h5", tmp_path / "b.h5"], tmp_path / "all.h5")
    merged = read_features(tmp_path / "all.h5", dtype=np.float32)
    feats, ids, attrs = merged.features, merged.ids, merged.attrs
    np.testing.assert_array_equal(feats, np.concatenate([a, b]).astype(np.float32))
    np.testing.assert_array_equal(ids, [0, 1, 2, 3, 4])
    assert attrs["n_rows"] == 5 and attrs["shard_splits"] == [0, 1]
    assert attrs["timesteps"] == [0, 100] and "split" not in attrs


def test_merge_refuses_mismatched_shards(tmp_path):
    write_features(tmp_path / "a.h5", np.zeros((2, 4)), [0, 1], {**ATTRS, "split": 0})
    write_features(tmp_path / "b.h5", np.zeros((2, 4)), [2, 3], {**ATTRS, "K": 3, "split": 1})
    write_features(tmp_path / "c.h5", np.zeros((2, 4)), [1, 2], {**ATTRS, "split": 1})
    with pytest.raises(FeatureMismatchError, match="K"):
        merge_feature_shards([tmp_path / "a.h5", tmp_path / "b.h5"], tmp_path / "m.h5")
    with pytest.raises(FeatureMismatchError, match=r"\[1\]"):
        merge_feature_shards([tmp_path / "a.h5", tmp_path / "c.h5"], tmp_path / "m.h5")
    assert not (tmp_path / "m.h5").exists()
    with pytest.raises(CorruptFileError):
        merge_feature_shards([tmp_path / "a.h5", tmp_path / "missing.h5"], tmp_path / "m.h5")


@pytest.mark.parametrize("max_evaluations", [1, 512])
def test_normalized_timesteps_equal_a_per_timestep_loop(scheduler, max_evaluations):
    """Each timestep's per-sample gradient scaled to unit norm before the mean (DAS)."""
    model = tiny_cond_unet().double()
    x0, ids, steps = images(2), [3, 8], [0, 250, 999]
    cond = torch.randn(2, 5, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    inputs = QueryRows(x0, ids, cond=cond)
    plain_options = GradientOptions(
        output_fn="mean", timesteps=steps, noise_seed=0, max_evaluations=max_evaluations
    )
    options = dataclasses.replace(plain_options, normalize_timesteps=True)
    fused = mean_gradients(model, scheduler, inputs, options)
    with vmap_safe_attention(model):
        slow = 0
        for t in steps:
            g = slow_gradients(model, scheduler, inputs, t, "mean", 0)
            slow = slow + g / (g.norm(dim=1, keepdim=True) + 1e-8)
    torch.testing.assert_close(fused, slow / 3, rtol=1e-9, atol=1e-12)
    plain = mean_gradients(model, scheduler, inputs, plain_options)
    assert not torch.allclose(fused, plain)  # the option changes the features


def test_normalized_features_are_projected_mean_of_unit_gradients(scheduler):
    model = tiny_unet()
    x, ids = images(3), [0, 1, 2]
    proj = make_projector("normal", num_trainable_parameters(model), 16, 0)
    inputs = QueryRows(x, ids)
    options = GradientOptions(
        output_fn="square", timesteps=[0, 500], noise_seed=0, normalize_timesteps=True
    )
    feats = extract_features(model, scheduler, inputs, options, proj, Runtime(batch_size=2))
    mean = 0
    for t in (0, 500):
        g = per_sample_gradients(model, scheduler, inputs, t, "square", 0)
        mean = mean + g / (g.norm(dim=1, keepdim=True) + 1e-8)
    assert_close_at_row_scale(feats, proj.project(mean / 2).numpy(), rtol=1e-5)


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("output_fn", "nope", "nope"),
        ("output_fn", 3, "output function or its name"),
        ("timesteps", [], "timesteps is empty"),
        ("noise_seed", 1.5, "noise_seed must be an integer, got 1.5"),
        ("normalize_timesteps", 1, "normalize_timesteps must be True or False, got 1"),
        ("max_evaluations", 0, "max_evaluations must be a positive integer, got 0"),
        ("max_evaluations", True, "max_evaluations must be a positive integer, got True"),
    ],
)
def test_gradient_options_name_the_bad_value(field, value, match):
    valid = {"output_fn": "loss", "timesteps": [0], "noise_seed": 0}
    with pytest.raises(ConfigError, match=match):
        GradientOptions(**{**valid, field: value})


def test_gradient_inputs_rows_slice_every_field():
    keys = np.array([7, 8, 9], dtype=np.uint64)
    inputs = QueryRows(images(3), [4, 5, 6], torch.zeros(3, 2, 2), keys)
    part = inputs.rows(1, 3)
    assert part.x0.shape[0] == 2 and part.ids == [5, 6] and part.cond.shape[0] == 2
    assert part.noise_keys.tolist() == [8, 9]
    assert QueryRows(images(3), [4, 5, 6]).rows(0, 1).noise_keys is None
