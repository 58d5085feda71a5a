"""The structured (Kronecker-factored) projection against explicit per-sample gradients (float64).

Every check compares with a naive loop: one forward and backward pass per evaluation, the full
per-sample gradient, times the explicit [P, Z] matrix the projection stands for (built from
Kronecker products of its factor matrices by ``dense_equivalent``).
"""

import dataclasses

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, UNet2DConditionModel, UNet2DModel
from torch import nn

from diffattr.counter_rng import counter_matrix, counter_matrix_reference, matrix_key
from diffattr.errors import ConfigError
from diffattr.features import (
    GradientOptions,
    extract_features,
    trainable_parameters,
)
from diffattr.noise import sample_noise
from diffattr.outputs import get_output_fn
from diffattr.projection import CounterProjector
from diffattr.projection_structured import (
    Split,
    allocate,
    build_layout,
    choose_projection,
    factor_dims,
    make_feature_projector,
    make_structured_projector,
    read_layout,
)
from diffattr.queries import QueryRows
from diffattr.settings import Runtime
from tests.numerics import assert_close_at_row_scale


@pytest.fixture(scope="module")
def scheduler():
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")


def naive_gradients(model, loss_of_row, inputs):
    """[E, P]: ∇_θ of loss_of_row(model, inputs[e:e+1]) for each e, one backward each."""
    params = list(trainable_parameters(model).values())
    rows = []
    for e in range(inputs.shape[0]):
        grads = torch.autograd.grad(loss_of_row(model, inputs[e : e + 1]), params)
        rows.append(torch.cat([g.reshape(-1) for g in grads]))
    return torch.stack(rows)


def structured_rows(projector, model, loss_of_batch, inputs):
    def run_loss():
        x = inputs.detach().clone().requires_grad_(True)
        return loss_of_batch(model, x), x

    return projector.evaluation_features(model, run_loss, inputs.shape[0])


class Wrapped(nn.Module):
    def __init__(self, *layers):
        super().__init__()
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x)


def _check_layerwise(model, inputs, proj_dim, loss=lambda y: (y**2).sum() + y.sum()):
    model = model.double()
    inputs = inputs.double()
    projector = make_structured_projector(model, proj_dim, seed=3)

    def per_row(m, x):
        return loss(m(x))

    expected = naive_gradients(model, per_row, inputs) @ projector.dense_equivalent(model)
    ours = structured_rows(projector, model, per_row, inputs)
    assert ours.shape == (inputs.shape[0], proj_dim)
    torch.testing.assert_close(ours, expected, rtol=1e-9, atol=1e-10)
    return projector


def test_linear_layers_with_positions_and_bias():
    torch.manual_seed(0)
    model = Wrapped(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 4, bias=False), nn.LayerNorm(4))
    _check_layerwise(model, torch.randn(3, 7, 6), proj_dim=40)


@pytest.mark.parametrize(
    "conv",
    [
        dict(kernel_size=3, padding=1),
        dict(kernel_size=3, stride=2, padding=1),
        dict(kernel_size=(2, 3), stride=(2, 1), padding=(0, 2), dilation=(1, 2)),
    ],
)
def test_conv2d_padding_stride_dilation(conv):
    torch.manual_seed(1)
    model = Wrapped(nn.Conv2d(3, 4, **conv), nn.GroupNorm(2, 4), nn.SiLU(), nn.Conv2d(4, 2, 1))
    _check_layerwise(model, torch.randn(3, 3, 7, 6), proj_dim=50)


def test_attention_projections():
    from diffusers.models.attention_processor import Attention

    torch.manual_seed(2)
    attention = Attention(query_dim=8, heads=2, dim_head=4, bias=True, norm_num_groups=2)

    class Spatial(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = attention

        def forward(self, x):
            return self.attn(x)

    model = Spatial()
    projector = _check_layerwise(model, torch.randn(2, 8, 3, 3), proj_dim=60)
    names = {b.name for b in projector.layout.blocks}
    assert {"attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0"} <= names


def test_lora_factors():
    peft = pytest.importorskip("peft")
    torch.manual_seed(3)
    base = Wrapped(nn.Linear(6, 8), nn.SiLU(), nn.Linear(8, 5))
    config = peft.LoraConfig(
        r=3, lora_alpha=6, init_lora_weights="gaussian", target_modules=["layers.0", "layers.2"]
    )
    model = peft.get_peft_model(base, config)
    trainable = trainable_parameters(model)
    assert trainable and all("lora_" in name for name in trainable)
    projector = _check_layerwise(model, torch.randn(3, 4, 6), proj_dim=30)
    assert len(projector.layout.blocks) == 4 and projector.layout.rest_dim == 0


def tiny_unet(seed=0):
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
        resnet_time_scale_shift="scale_shift",
    ).eval()


def slow_mean_gradients(model, scheduler, inputs, options):
    """``mean_gradients`` by hand: (1/K) Σ_t of per-sample gradients, one backward per
    (sample, t), x_t written out; sample i's noise key is ``inputs.noise_keys[i]`` (default:
    its id). Plain options only (no per-timestep normalisation)."""
    assert not options.normalize_timesteps
    x0, ids, cond = inputs.x0, inputs.ids, inputs.cond
    keys = list(ids) if inputs.noise_keys is None else list(inputs.noise_keys)
    fn, seed, timesteps = get_output_fn(options.output_fn), options.noise_seed, options.timesteps
    params = list(trainable_parameters(model).values())
    dtype = params[0].dtype
    total = 0
    for t in timesteps:
        abar = scheduler.alphas_cumprod.to(dtype)[t]
        rows = []
        for i in range(len(ids)):
            eps = sample_noise("features", seed, t, [keys[i]], x0.shape[1:]).to(dtype)
            x_t = abar.sqrt() * x0[i : i + 1].to(dtype) + (1 - abar).sqrt() * eps
            kw = {} if cond is None else {"encoder_hidden_states": cond[i : i + 1].to(dtype)}
            out = fn(model(x_t, torch.tensor([t]), **kw).sample, eps, torch.tensor([t]), scheduler)
            grads = torch.autograd.grad(out.sum(), params)
            rows.append(torch.cat([g.reshape(-1) for g in grads]))
        total = total + torch.stack(rows)
    return total / len(timesteps)


def test_unet_end_to_end_equals_projected_mean_gradient(scheduler):
    model = tiny_unet().double()
    x0 = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    ids, steps = [4, 9, 2], [0, 400, 999]
    projector = make_structured_projector(model, 300, seed=7)
    inputs = QueryRows(x0, ids)
    options = GradientOptions(output_fn="square", timesteps=steps, noise_seed=0)
    ours = extract_features(model, scheduler, inputs, options, projector, Runtime(batch_size=2))
    dense = projector.dense_equivalent(model)
    expected = slow_mean_gradients(model, scheduler, inputs, options) @ dense
    np.testing.assert_allclose(ours, expected.numpy(), rtol=1e-5, atol=1e-5)
    # float32 output of a float64 model: compare once more in float64 through the library
    assert ours.dtype == np.float32 and ours.shape == (3, 300)


def test_conditional_unet_lora_end_to_end(scheduler):
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    model = UNet2DConditionModel(
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
    model = model.double().requires_grad_(False)
    model.add_adapter(
        peft.LoraConfig(
            r=2,
            lora_alpha=2,
            init_lora_weights="gaussian",
            target_modules=["to_q", "to_k", "to_v", "to_out.0"],
        )
    )
    x0 = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    cond = torch.randn(2, 5, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ids, steps = [3, 8], [100, 700]
    projector = make_structured_projector(model, 64, seed=1)
    inputs = QueryRows(x0, ids, cond=cond)
    options = GradientOptions(output_fn="loss", timesteps=steps, noise_seed=0)
    ours = extract_features(model, scheduler, inputs, options, projector, Runtime(batch_size=2))
    dense = projector.dense_equivalent(model)
    expected = slow_mean_gradients(model, scheduler, inputs, options) @ dense
    np.testing.assert_allclose(ours, expected.numpy(), rtol=1e-5, atol=1e-6)


def test_features_independent_of_batch_size_and_order(scheduler):
    model = tiny_unet(seed=1)
    x0 = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    ids = np.array([10, 11, 12, 13, 14])
    projector = make_structured_projector(model, 128, seed=2)
    steps = [0, 500]
    options = GradientOptions(output_fn="loss", timesteps=steps, noise_seed=0)
    whole = extract_features(
        model, scheduler, QueryRows(x0, ids), options, projector, Runtime(batch_size=5)
    )
    order = np.array([3, 0, 4, 1, 2])
    parts = extract_features(
        model,
        scheduler,
        QueryRows(x0[order], ids[order]),
        dataclasses.replace(options, max_evaluations=3),
        projector,
        Runtime(batch_size=2),
    )
    assert_close_at_row_scale(parts, whole[order], rtol=1e-5)


def test_two_builds_same_matrices_and_layout():
    a = make_structured_projector(tiny_unet(seed=0), 200, seed=5)
    b = make_structured_projector(tiny_unet(seed=9), 200, seed=5)  # other weights, same shapes
    assert a.describe() == b.describe()
    block = a.layout.blocks[3]
    for role, rows, cols in (("in", block.d_in, block.r_in), ("out", block.d_out, block.r_out)):
        ma = a.matrix(block.name, role, rows, cols, "cpu", torch.float32)
        mb = b.matrix(block.name, role, rows, cols, "cpu", torch.float32)
        assert torch.equal(ma, mb)
        key = matrix_key(5, "structured", "normal", block.name, role, rows, cols)
        np.testing.assert_array_equal(
            ma.numpy(), counter_matrix_reference(key, rows, cols).astype(np.float32)
        )
    other = make_structured_projector(tiny_unet(), 200, seed=6)
    assert not torch.equal(
        other.matrix(block.name, "in", block.d_in, block.r_in, "cpu", torch.float32),
        a.matrix(block.name, "in", block.d_in, block.r_in, "cpu", torch.float32),
    )


def test_layout_covers_z_exactly_and_respects_caps():
    model = tiny_unet()
    for allocation in ("proportional", "sqrt", "equal"):
        layout = build_layout(model, 500, allocation)
        dims = [b.dim for b in layout.blocks] + [layout.rest_dim]
        assert sum(dims) == 500 and min(dims) >= 1
        offsets = [b.offset for b in layout.blocks] + [layout.rest_offset]
        assert offsets == list(np.cumsum([0, *dims[:-1]]))
        for b in layout.blocks:
            assert b.r_out * b.r_in >= b.dim and b.r_out <= b.d_out and b.r_in <= b.d_in
    assert allocate([3, 100], [1.0, 1.0], 50) == [3, 47]
    assert allocate([10, 10, 10], [1.0, 2.0, 1.0], 12) == [3, 6, 3]
    assert factor_dims(12, 4, 100) == (1, 12)
    with pytest.raises(ConfigError, match="proj_dim"):
        build_layout(model, 10**9)
    with pytest.raises(ConfigError, match="allocation"):
        build_layout(model, 100, "cubic")


def test_unsupported_module_is_named():
    model = Wrapped(nn.Embedding(5, 3))
    with pytest.raises(ConfigError, match="layers.0.*Embedding"):
        make_structured_projector(model, 4, seed=0)
    # auto falls back to the dense counter projection beyond the dense cache
    assert choose_projection("auto", 10**6, 32768, structured_ok=False) == "dense_counter"
    assert choose_projection("auto", 190_000, 1024) == "dense"
    assert choose_projection("auto", 38_000_000, 32768) == "structured"
    with pytest.raises(ConfigError, match="valid"):
        choose_projection("sparse", 10, 10)
    assert make_feature_projector(tiny_unet(), 64, 0).projection == "dense"
    assert make_feature_projector(tiny_unet(), 64, 0, projection="structured").projection == (
        "structured"
    )


@pytest.mark.parametrize("kind", ["normal", "rademacher"])
def test_counter_matrix_is_its_formula(kind):
    key = matrix_key(42, "test", 7)
    ours = counter_matrix(key, range(4, 17), 17, kind, dtype=torch.float64)
    np.testing.assert_allclose(
        ours.numpy(), counter_matrix_reference(key, range(4, 17), 17, kind), 0, 1e-15
    )
    assert torch.equal(counter_matrix(key, range(13), 17, kind), counter_matrix(key, 13, 17, kind))


def test_counter_matrix_rows_are_checked():
    with pytest.raises(ConfigError, match="step 1, got range"):
        counter_matrix(1, range(0, 10, 2), 3)
    with pytest.raises(ConfigError, match="rows >= 0 and cols >= 1, got -1 x 3"):
        counter_matrix(1, -1, 3)
    with pytest.raises(ConfigError, match="row indices >= 0"):
        counter_matrix_reference(1, range(-2, 3), 3)


def test_counter_projector_blocks_and_formula():
    proj = CounterProjector("normal", 50, 7, seed=3, block_size=16)
    other = CounterProjector("normal", 50, 7, seed=3, block_size=5)
    assert torch.equal(proj.matrix(), other.matrix())  # the matrix does not depend on blocks
    reference = counter_matrix_reference(matrix_key(3, "dense", "normal", 50, 7), 50, 7)
    np.testing.assert_allclose(proj.matrix().numpy(), reference, rtol=1e-6, atol=1e-6)
    grads = torch.randn(4, 50, dtype=torch.float64)
    np.testing.assert_allclose(proj.project(grads).numpy(), grads.numpy() @ reference, 1e-10)
    assert proj.describe()["kind"] == "dense_counter-normal"


@pytest.mark.parametrize("mixing, max_bytes", [(1, None), (3, None), (3, 1000)])
def test_journey_trajectory_features_with_structured_projection(
    scheduler, monkeypatch, mixing, max_bytes
):
    """Unmixed, mixed with the matrix held, and mixed per job (the matrix too large to hold)."""
    import diffattr.projection_structured as ps
    from diffattr.methods.journey import trajectory_gradients

    if max_bytes is not None:
        monkeypatch.setattr(ps, "MAX_MIXING_BYTES", max_bytes)
    model = tiny_unet(seed=2).double()
    trajectory = np.random.default_rng(0).uniform(-1, 1, (3, 2, 1, 8, 8))
    timesteps, ids = np.array([700, 0]), np.array([4, 7, 9])
    projector = make_structured_projector(model, 100, seed=4, split=Split(mixing=mixing))
    assert projector.deferred == (max_bytes is not None)
    got = trajectory_gradients(
        model,
        scheduler,
        QueryRows(trajectory, ids),
        GradientOptions(output_fn="loss", timesteps=timesteps, noise_seed=3),
        projector,
        Runtime(batch_size=2),
    )
    from diffattr.noise import feature_noise_keys

    keys = feature_noise_keys("independent", "gen", ids, np.arange(len(ids)))
    per_step = [
        slow_mean_gradients(
            model,
            scheduler,
            QueryRows(torch.from_numpy(trajectory[:, s]), ids, noise_keys=keys),
            GradientOptions(output_fn="loss", timesteps=[t], noise_seed=3),
        )
        for s, t in enumerate(timesteps.tolist())
    ]
    expected = torch.stack(per_step).mean(0) @ projector.dense_equivalent(model)
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5, atol=1e-5)


def test_provenance_is_written_and_read_back(tmp_path, monkeypatch):
    from diffattr import projection_structured
    from diffattr.features import write_features
    from diffattr.files import read_features

    projector = make_structured_projector(tiny_unet(), 64, seed=1, split="sqrt")
    for limit in (10**6, 10):  # plain JSON, and the compressed form of long layouts
        monkeypatch.setattr(projection_structured, "MAX_LAYOUT_CHARS", limit)
        attrs = {f"proj_{k}" if not k.startswith("proj") else k: v
                 for k, v in projector.describe().items()}  # fmt: skip
        write_features(tmp_path / "f.h5", np.zeros((1, 64), np.float32), [0], attrs)
        back = read_features(tmp_path / "f.h5").attrs
        assert back["projection"] == "structured" and back["proj_kind"] == "structured-normal"
        assert back["proj_allocation"] == "sqrt"
        layout = read_layout(back)
        assert layout["proj_dim"] == 64 and len(layout["blocks"]) == len(projector.layout.blocks)


def test_noise_keys_reach_the_structured_path(scheduler):
    model = tiny_unet(seed=3).double()
    x0 = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    ids, keys, steps = [1, 2], np.array([77, 77], dtype=np.uint64), [300]
    projector = make_structured_projector(model, 80, seed=0)
    inputs = QueryRows(x0, ids, noise_keys=keys)
    options = GradientOptions(output_fn="loss", timesteps=steps, noise_seed=0)
    ours = extract_features(model, scheduler, inputs, options, projector, Runtime(batch_size=2))
    slow = slow_mean_gradients(model, scheduler, inputs, options)
    expected = slow @ projector.dense_equivalent(model)
    np.testing.assert_allclose(ours, expected.numpy(), rtol=1e-5, atol=1e-6)


def test_timestep_normalisation_divides_each_projected_gradient(scheduler):
    model = tiny_unet(seed=4).double()
    x0 = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(6))
    ids, steps, dim = [5, 6], [0, 600], 90
    projector = make_structured_projector(model, dim, seed=2)
    inputs = QueryRows(x0, ids)
    options = GradientOptions(
        output_fn="loss", timesteps=steps, noise_seed=0, normalize_timesteps=True
    )
    ours = extract_features(model, scheduler, inputs, options, projector, Runtime(batch_size=2))
    dense = projector.dense_equivalent(model)
    expected = 0
    for t in steps:
        one_step = GradientOptions(output_fn="loss", timesteps=[t], noise_seed=0)
        phi = slow_mean_gradients(model, scheduler, inputs, one_step) @ dense
        expected = expected + phi / (phi.norm(dim=1, keepdim=True) / dim**0.5 + 1e-8)
    np.testing.assert_allclose(ours, (expected / len(steps)).numpy(), rtol=1e-5, atol=1e-6)


def test_mixed_projection_equals_its_explicit_matrix(scheduler):
    """With mixing the feature is (blocks of m·Z dims) @ M / √(m·Z): the naive mean gradient
    times ``dense_equivalent`` (which includes M), and M is its counter formula."""
    model = tiny_unet().double()
    x0 = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    inputs = QueryRows(x0, [4, 9, 2])
    options = GradientOptions(output_fn="square", timesteps=[0, 400, 999], noise_seed=0)
    projector = make_structured_projector(model, 60, seed=7, split=Split(mixing=4))
    assert projector.sketch_dim == 240 and projector.layout.mixed_dim == 60
    ours = extract_features(model, scheduler, inputs, options, projector, Runtime(batch_size=2))
    expected = slow_mean_gradients(model, scheduler, inputs, options) @ projector.dense_equivalent(
        model
    )
    assert ours.shape == (3, 60)
    np.testing.assert_allclose(ours, expected.numpy(), rtol=1e-5, atol=1e-5)
    key = matrix_key(7, "structured", "normal", "<mix>", "mix", 240, 60)
    mix = projector._mixing_matrix("cpu", torch.float64).numpy()
    np.testing.assert_allclose(mix, counter_matrix_reference(key, 240, 60) / np.sqrt(240))
    # mixing 1 is the unmixed projection, and the two layouts never share a digest
    plain = make_structured_projector(model, 240, seed=7)
    assert plain.layout.blocks == projector.layout.blocks
    assert plain.layout.digest() != projector.layout.digest()
    assert projector.describe()["mixing"] == 4 and "mixing" not in plain.describe()


def test_hadamard_mixed_projection_equals_its_explicit_matrix(scheduler):
    """``mixer: hadamard``: the naive mean gradient times ``dense_equivalent``, whose mixing
    part is the SRHT of its key; the layout and provenance record the mixer."""
    from diffattr.hadamard import SubsampledHadamard

    model = tiny_unet().double()
    x0 = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    inputs = QueryRows(x0, [4, 9, 2])
    options = GradientOptions(output_fn="square", timesteps=[0, 400, 999], noise_seed=0)
    split = Split(mixing=4, mixer="hadamard")
    projector = make_structured_projector(model, 60, seed=7, split=split)
    assert not projector.deferred and projector.sketch_dim == 240
    ours = extract_features(model, scheduler, inputs, options, projector, Runtime(batch_size=2))
    naive = slow_mean_gradients(model, scheduler, inputs, options)
    expected = naive @ projector.dense_equivalent(model)
    np.testing.assert_allclose(ours, expected.numpy(), rtol=1e-5, atol=1e-5)
    # the blocks as unmixed at 240 dimensions; the rest group through its own SRHT
    unmixed = make_structured_projector(model, 240, seed=7).dense_equivalent(model)
    layout, first = projector.layout, 0
    rows = sum(n for _, n in layout.rest_params)
    rest_key = matrix_key(7, "structured", "<rest>", "hadamard", rows, layout.rest_dim)
    rest_map = SubsampledHadamard(rest_key, rows, layout.rest_dim).matrix()
    rest_map *= np.sqrt(240 * rows / layout.rest_dim)
    offsets = {}
    for name, param in model.named_parameters():
        offsets[name], first = first, first + param.numel()
    row = 0
    columns = slice(layout.rest_offset, layout.rest_offset + layout.rest_dim)
    for name, numel in layout.rest_params:
        unmixed[offsets[name] : offsets[name] + numel, columns] = rest_map[row : row + numel]
        row += numel
    key = matrix_key(7, "structured", "<mix>", "hadamard", 240, 60)
    srht = SubsampledHadamard(key, 240, 60).matrix()
    np.testing.assert_allclose(
        projector.dense_equivalent(model).numpy(), (unmixed @ srht).numpy(), atol=1e-12
    )
    gaussian = make_structured_projector(model, 60, seed=7, split=Split(mixing=4))
    assert gaussian.layout.digest() != projector.layout.digest()
    assert projector.describe()["mixer"] == "hadamard" and "mixer" not in gaussian.describe()


def test_a_hadamard_mixer_is_never_deferred(monkeypatch):
    import diffattr.projection_structured as ps

    monkeypatch.setattr(ps, "MAX_MIXING_BYTES", 10)
    model = tiny_unet()
    split = Split(mixing=4, mixer="hadamard")
    assert not make_structured_projector(model, 48, seed=0, split=split).deferred
    assert make_structured_projector(model, 48, seed=0, split=Split(mixing=4)).deferred


def test_bad_mixer_is_named():
    with pytest.raises(ConfigError, match="structured_mixer = 'fft'; valid mixers are: gaussian"):
        make_structured_projector(tiny_unet(), 60, seed=0, split=Split(mixing=2, mixer="fft"))


@pytest.mark.parametrize("mixer", ["gaussian", "hadamard"])
def test_mixed_kernel_keeps_the_dense_scale(mixer):
    """E[φ(g)·φ(h)] = Z·⟨g, h⟩ with mixing, as without: averaged over 300 seeds within 10 %."""
    torch.manual_seed(0)
    model = Wrapped(nn.Linear(12, 10), nn.Tanh(), nn.Linear(10, 6))
    total = sum(p.numel() for p in model.parameters())
    g = torch.randn(total, dtype=torch.float64)
    ratios = []
    for seed in range(300):
        dense = make_structured_projector(
            model, 16, seed=seed, split=Split(mixing=3, mixer=mixer)
        ).dense_equivalent(model)
        ratios.append(float((g @ dense).square().sum() / (16 * g.square().sum())))
    assert abs(np.mean(ratios) - 1) < 0.1


@pytest.mark.parametrize("mixing", [0, -2, 2.5, True])
def test_bad_mixing_is_named(mixing):
    with pytest.raises(ConfigError, match="structured_mixing"):
        make_structured_projector(tiny_unet(), 60, seed=0, split=Split(mixing=mixing))


def test_a_mixing_matrix_too_large_to_hold_is_applied_per_job_in_blocks(scheduler, monkeypatch):
    """Beyond MAX_MIXING_BYTES batches keep their m·Z sketches and the job mixes its rows in
    blocks of the matrix's rows at the end: the same features as the held-whole matrix."""
    import diffattr.projection_structured as ps

    model = tiny_unet(seed=2)
    x0 = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    inputs = QueryRows(x0, np.arange(5))
    options = GradientOptions(output_fn="loss", timesteps=[10, 600], noise_seed=0)
    held = make_structured_projector(model, 48, seed=3, split=Split(mixing=4))
    whole = extract_features(model, scheduler, inputs, options, held, Runtime(batch_size=2))
    assert not held.deferred and held.batch_dim == 48
    monkeypatch.setattr(ps, "MAX_MIXING_BYTES", 1000)
    monkeypatch.setattr(ps, "MIXING_BLOCK_BYTES", 48 * 4 * 50)  # 50 rows per block: 4 blocks
    deferred = make_structured_projector(model, 48, seed=3, split=Split(mixing=4))
    assert deferred.deferred and deferred.batch_dim == deferred.sketch_dim == 192
    assert deferred.describe() == held.describe()
    blocks = extract_features(model, scheduler, inputs, options, deferred, Runtime(batch_size=3))
    assert blocks.shape == (5, 48) and blocks.dtype == np.float32
    np.testing.assert_allclose(blocks, whole, rtol=1e-4, atol=1e-5 * np.abs(whole).max())
