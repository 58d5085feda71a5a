"""Stable Diffusion + LoRA (the ArtBench setting) on a tiny random-weight SD stack.

Only the adapters train and carry gradients; a saved model is the adapter alone and reloads to
identical outputs; captions are dropped for classifier-free guidance; generated prompts are
recorded and read back; a missing base model fails before any job; and the whole workflow runs.
"""

from __future__ import annotations

import csv
import math
import shutil
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from diffattr.errors import ConfigError
from diffattr.features import num_trainable_parameters, per_sample_gradients
from diffattr.jobs.features import extract_features
from diffattr.jobs.generate import generate_samples
from diffattr.jobs.measure import measure_outputs
from diffattr.models import (
    LoRAStableDiffusion,
    build_model,
    check_base_model,
    load_diffusion_model,
    load_model,
    resolve_base_model,
)
from diffattr.queries import QueryRows, load_query_captions
from diffattr.sampling import DdimSettings, assign_prompts, generate, sample_seeds
from diffattr.settings import (
    FeatureSettings,
    GenerationSettings,
    MeasureSettings,
    Runtime,
    SplitRows,
)
from diffattr.training import LatentBatches, TrainingRun, TrainingSettings, train_diffusion_model
from tests.sd_fixture import build_captioned_imagefolder, build_tiny_sd
from tests.workflow_utils import ROOT, planned_jobs, snakemake, write_config

CAPTIONS = ["a baroque painting", "a ukiyo e painting"]
LORA = {"rank": 4, "alpha": None, "target_modules": ["to_q", "to_k", "to_v", "to_out.0"]}


@pytest.fixture(autouse=True, scope="module")
def _one_thread_for_module_fixtures():
    """conftest's one-thread fixture is per test; the module fixtures below train too."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return build_tiny_sd(tmp_path_factory.mktemp("sd") / "tiny-sd")


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (n, 3, 16, 16)).astype(np.float32)


def _captions(n: int) -> list[str]:
    return [CAPTIONS[i % 2] for i in range(n)]


def _model(base: Path, seed: int = 0, **lora) -> LoRAStableDiffusion:
    torch.manual_seed(seed)
    return build_model({"kind": "sd_lora", "base": str(base), "lora": {**LORA, **lora}}, {})


def _settings(**overrides) -> TrainingSettings:
    values = {"epochs": 2, "batch_size": 4, "lr": 1e-2, "checkpoint_every": 0, "device": "cpu"}
    return TrainingSettings(**{**values, **overrides})


@pytest.fixture(scope="module")
def trained(base, tmp_path_factory) -> Path:
    """A LoRA model trained for a few steps, so its adapters are no longer zero."""
    out = tmp_path_factory.mktemp("trained")
    model = _model(base)
    run = TrainingRun(out / "model", out / "ck")
    train_diffusion_model(model, _images(12), _settings(), run, captions=_captions(12))
    return out / "model"


def _lora_parameter_count(model: LoRAStableDiffusion, rank: int) -> int:
    """Independently: r * (in + out) for every targeted linear layer of the base UNet."""
    total = 0
    for name, module in model.denoiser.named_modules():
        if name.endswith(("to_q", "to_k", "to_v", "to_out.0")) and hasattr(module, "base_layer"):
            layer = module.base_layer
            total += rank * (layer.in_features + layer.out_features)
    return total


def test_only_adapters_train_and_features_span_them(base):
    model = _model(base)
    model.denoiser.train()
    x0 = model.encode(_images(2))
    cond = model.condition(CAPTIONS)
    noise = torch.randn_like(x0)
    loss = torch.nn.functional.mse_loss(
        model.denoiser(x0 + noise, torch.tensor([10, 700]), encoder_hidden_states=cond).sample,
        noise,
    )
    # A nonzero B, so that A receives a gradient too.
    for name, param in model.trainable_parameters().items():
        if "lora_B" in name:
            param.data.normal_(0, 0.1)
    loss = torch.nn.functional.mse_loss(
        model.denoiser(x0 + noise, torch.tensor([10, 700]), encoder_hidden_states=cond).sample,
        noise,
    )
    loss.backward()
    for name, param in model.denoiser.named_parameters():
        if "lora_" in name:
            assert param.requires_grad and param.grad is not None and param.grad.abs().sum() > 0
        else:
            assert not param.requires_grad and param.grad is None, name
    for module in (model.vae, model.text_encoder):
        assert all(p.grad is None and not p.requires_grad for p in module.parameters())

    P = _lora_parameter_count(model, rank=4)
    assert P > 0 and P == num_trainable_parameters(model.denoiser)
    assert P < sum(p.numel() for p in model.denoiser.parameters()) / 5
    inputs = QueryRows(x0, [0, 1], cond=cond)
    grads = per_sample_gradients(model.denoiser, model.scheduler, inputs, 100, "square", 0)
    assert grads.shape == (2, P)


def test_save_and_reload_reproduce_outputs_exactly(base, trained):
    files = sorted(p.relative_to(trained).as_posix() for p in trained.rglob("*") if p.is_file())
    assert files == [
        "diffattr_model.json",
        "diffattr_training.json",
        "lora/adapter_config.json",
        "lora/adapter_model.safetensors",
        "scheduler/scheduler_config.json",
    ], "only the adapter is saved, never the base weights"
    reloaded = load_diffusion_model(trained)
    again = load_diffusion_model(trained)
    assert reloaded.kind == "sd_lora" and reloaded.base == str(base)
    lora_b = [p for n, p in reloaded.trainable_parameters().items() if "lora_B" in n]
    assert any(p.abs().sum() > 0 for p in lora_b), "training moved the adapters"
    x0 = reloaded.encode(_images(3, seed=5))
    cond = reloaded.condition(_captions(3))
    t = torch.tensor([1, 400, 999])
    with torch.no_grad():
        a = reloaded.denoiser(x0, t, encoder_hidden_states=cond).sample
        b = again.denoiser(x0, t, encoder_hidden_states=cond).sample
    assert torch.equal(a, b)
    denoiser, scheduler = load_model(trained)
    with torch.no_grad():
        assert torch.equal(denoiser(x0, t, encoder_hidden_states=cond).sample, a)
    assert scheduler.config.beta_schedule == "scaled_linear", "the base's schedule"
    # Saving the reloaded model writes the same adapter bytes.
    reloaded.save(trained.parent / "resaved")
    for name in ("lora/adapter_model.safetensors", "diffattr_model.json"):
        assert (trained / name).read_bytes() == (trained.parent / "resaved" / name).read_bytes()


def test_training_is_deterministic_and_resumes(base, tmp_path):
    images, captions = _images(12), _captions(12)
    settings = _settings(checkpoint_every=2)
    first = TrainingRun(tmp_path / "a", tmp_path / "ck-a")
    train_diffusion_model(_model(base), images, settings, first, captions=captions)
    stopped = TrainingRun(tmp_path / "b", tmp_path / "ck-b", stop_after=3)
    partial = train_diffusion_model(_model(base), images, settings, stopped, captions)
    assert partial["stopped_early"]
    resumed = TrainingRun(tmp_path / "b", tmp_path / "ck-b")
    train_diffusion_model(_model(base), images, settings, resumed, captions=captions)
    name = "lora/adapter_model.safetensors"
    assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_caption_dropout_uses_the_empty_caption(base):
    model = _model(base)
    captions = _captions(8)
    empty = model.condition([""])[0]
    batches = LatentBatches(model, _images(8), captions, _settings(caption_dropout=0.3))
    rows = torch.arange(8)
    dropped, total = 0, 0
    for step in range(40):
        x0, cond = batches.batch(rows, torch.Generator().manual_seed(step))
        assert x0.shape == (8, 4, 8, 8)
        is_empty = torch.tensor([torch.equal(c, empty) for c in cond])
        kept = cond[~is_empty]
        expected = model.condition([captions[i] for i in rows[~is_empty].tolist()])
        assert torch.equal(kept, expected), "kept rows keep their own caption"
        dropped += int(is_empty.sum())
        total += len(rows)
    assert 0.2 < dropped / total < 0.4
    again, _ = batches.batch(rows, torch.Generator().manual_seed(0))
    first, _ = batches.batch(rows, torch.Generator().manual_seed(0))
    assert torch.equal(again, first), "a step's batch is a function of its generator"
    never = LatentBatches(model, _images(8), captions, _settings(caption_dropout=0.0))
    _, cond = never.batch(rows, torch.Generator().manual_seed(1))
    assert not any(torch.equal(c, empty) for c in cond)


def test_latents_sample_the_vae_posterior_and_measure_uses_its_mode(base):
    model = _model(base)
    images = _images(4)
    mean, std = model.latent_distribution(images)
    torch.testing.assert_close(model.encode(images), mean * model.latent_scale)
    torch.testing.assert_close(model.encode(images, scaled=False), mean)
    with torch.no_grad():
        direct = model.vae.encode(torch.from_numpy(images)).latent_dist.mode()
    torch.testing.assert_close(mean, direct)
    batches = LatentBatches(model, images, _captions(4), _settings(random_flip=False))
    draws = torch.stack(
        [batches.batch(torch.arange(4), torch.Generator().manual_seed(s))[0] for s in range(300)]
    )
    scaled_mean, scaled_std = mean * model.latent_scale, std * model.latent_scale
    assert (
        (draws.mean(0) - scaled_mean).abs() < 4 * scaled_std / math.sqrt(300)
    ).float().mean() > 0.98
    torch.testing.assert_close(draws.std(0), scaled_std, rtol=0.25, atol=1e-6)


def test_assign_prompts_in_blocks():
    two = assign_prompts(1000, ["a ukiyo e painting", "a post impressionism painting"])
    assert two[:500] == ["a ukiyo e painting"] * 500
    assert two[500:] == ["a post impressionism painting"] * 500
    five = assign_prompts(1000, list("abcde"))
    assert [five.count(c) for c in "abcde"] == [200] * 5 and five[199:201] == ["a", "b"]
    assert assign_prompts(3, ["x", "y", "z"]) == ["x", "y", "z"]
    assert [p for p in assign_prompts(5, ["x", "y"])].count("x") in (2, 3)
    with pytest.raises(ConfigError, match="only 1 samples"):
        assign_prompts(1, ["x", "y"])


def test_generation_records_prompts_and_queries_read_them(base, trained, tmp_path):
    dataset = tmp_path / "dataset.h5"
    _write_captioned_dataset(dataset)
    samples, grid = tmp_path / "gen.h5", tmp_path / "gen.png"
    generate_samples(
        str(trained),
        str(dataset),
        str(samples),
        str(grid),
        settings=GenerationSettings(
            num_samples=4, steps=3, eta=0.0, seed=0, grid_columns=2, guidance_scale=7.5,
            prompts=None,
        ),
        runtime=Runtime(batch_size=4, device="cpu"),
    )  # fmt: skip
    with h5py.File(samples) as handle:
        prompts = [p.decode() for p in handle["prompts"][()]]
        images = handle["images"][()]
        assert handle.attrs["guidance_scale"] == 7.5
    assert prompts == [CAPTIONS[0]] * 2 + [CAPTIONS[1]] * 2, "class captions in label order"
    assert images.shape == (4, 3, 16, 16) and np.abs(images).max() <= 1
    assert load_query_captions("gen", str(dataset), str(samples)) == prompts
    # One sample regenerates alone from its seed and prompt.
    model = load_diffusion_model(trained)
    alone = generate(
        model, sample_seeds(4, 0)[3:], DdimSettings(steps=3, batch_size=1), prompts[3:]
    )
    np.testing.assert_allclose(alone["images"][0], images[3], atol=1e-5)

    # Measurement conditions gen samples on the recorded prompts, not on their index.
    measured = tmp_path / "m.h5"
    measure = MeasureSettings(splits=["gen"], timesteps=5, noise_seeds=[0])
    cpu3 = Runtime(batch_size=3, device="cpu")
    measure_outputs(
        str(trained), str(dataset), str(samples), str(measured), settings=measure, runtime=cpu3
    )
    swapped = tmp_path / "gen-swapped.h5"
    shutil.copy(samples, swapped)
    with h5py.File(swapped, "r+") as handle:
        del handle["prompts"]
        handle.create_dataset("prompts", data=prompts[::-1], dtype=h5py.string_dtype())
    measured_swapped = tmp_path / "m2.h5"
    measure_outputs(
        str(trained), str(dataset), str(swapped), str(measured_swapped), settings=measure,
        runtime=cpu3,
    )  # fmt: skip
    with h5py.File(measured) as a, h5py.File(measured_swapped) as b:
        loss, loss_swapped = a["gen/loss"][()], b["gen/loss"][()]
        assert a.attrs["model_kind"] == "sd_lora"
    assert not np.allclose(loss, loss_swapped)

    features = tmp_path / "f.h5"
    rows = SplitRows(split="gen", samples_path=str(samples))
    settings = FeatureSettings(
        output_fn="square", K=2, t_strategy="uniform", proj_kind="normal", proj_dim=16,
        proj_seed=42, noise_seed=0, projection="auto", noise="independent",
    )  # fmt: skip
    runtime = Runtime(batch_size=4, device="cpu")
    extract_features(str(trained), str(dataset), str(features), rows=rows, settings=settings,
                     runtime=runtime)  # fmt: skip
    with h5py.File(features) as handle:
        assert handle["features"].shape == (4, 16)
        assert handle.attrs["grad_dim"] == num_trainable_parameters(model.denoiser)
        dense = handle["features"][()]
    # the structured projection covers the LoRA factors of the real SD-LoRA denoiser
    structured = replace(settings, proj_dim=128, projection="structured")  # Z >= 1 per factor
    extract_features(str(trained), str(dataset), str(features), rows=rows, settings=structured,
                     runtime=runtime)  # fmt: skip
    with h5py.File(features) as handle:
        assert handle.attrs["projection"] == "structured"
        assert handle.attrs["proj_kind"] == "structured-normal"
        structured = handle["features"][()]
    assert structured.shape == (len(dense), 128) and np.isfinite(structured).all()
    assert np.abs(structured).max() > 0


def _write_captioned_dataset(path: Path) -> None:
    """A dataset file with two classes and captions, as data.prepare_dataset writes it."""
    from diffattr import store

    arrays = {}
    for split, n in (("train", 6), ("val", 4)):
        labels = np.arange(n) % 2
        arrays[f"{split}/images"] = _images(n, seed=n)
        arrays[f"{split}/labels"] = labels
        arrays[f"{split}/ids"] = np.arange(n)
        arrays[f"{split}/captions"] = np.array([CAPTIONS[i] for i in labels], dtype=object)
    store.write_h5(path, arrays, {"class_names": ["baroque", "ukiyo_e"]})


def test_half_precision_needs_cuda(base, tmp_path):
    with pytest.raises(ConfigError, match="mixed_precision = 'fp16' needs a CUDA device"):
        train_diffusion_model(
            _model(base),
            _images(4),
            _settings(mixed_precision="fp16"),
            TrainingRun(tmp_path / "m", tmp_path / "ck"),
            captions=_captions(4),
        )


def test_captions_are_required(base, tmp_path):
    with pytest.raises(ConfigError, match="caption_template"):
        run = TrainingRun(tmp_path / "m", tmp_path / "c")
        train_diffusion_model(_model(base), _images(4), _settings(), run)


def test_base_model_resolution(base, tmp_path, monkeypatch):
    from huggingface_hub import constants

    assert resolve_base_model(str(base)) == base
    config = {"model": {"kind": "sd_lora", "base": str(tmp_path / "nowhere")}}
    with pytest.raises(ConfigError, match="does not exist.*model.base to its path"):
        check_base_model(config)
    # A hub id resolves through the Hugging Face cache only.
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(
        ConfigError, match=r"nor in the Hugging Face cache.*hf download org/tiny-sd"
    ):
        check_base_model({"model": {"kind": "sd_lora", "base": "org/tiny-sd"}})
    snapshot = tmp_path / "hub" / "models--org--tiny-sd" / "snapshots" / ("0" * 40)
    shutil.copytree(base, snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    assert check_base_model({"model": {"kind": "sd_lora", "base": "org/tiny-sd"}}) == snapshot
    shutil.rmtree(snapshot / "vae")
    with pytest.raises(ConfigError, match=r"lacks \['vae'\]"):
        check_base_model({"model": {"kind": "sd_lora", "base": "org/tiny-sd"}})
    assert check_base_model({"model": {"kind": "unet", "unet": {}}}) is None


def test_counterfactual_regenerates_with_the_recorded_prompt_and_guidance(base, trained, tmp_path):
    """The SD-LoRA counterfactual regenerates a target conditionally: with the original model
    it reproduces the stored sample bit for bit, and the recorded prompt and guidance scale
    (not an unconditional pass) decide the image."""
    from diffattr.jobs.counterfactual import regenerate_counterfactual

    dataset = tmp_path / "dataset.h5"
    _write_captioned_dataset(dataset)
    samples = tmp_path / "gen.h5"
    generate_samples(
        str(trained), str(dataset), str(samples), str(tmp_path / "gen.png"),
        settings=GenerationSettings(num_samples=4, steps=3, eta=0.0, seed=0, grid_columns=2,
                                    guidance_scale=3.0, prompts=None),
        runtime=Runtime(batch_size=2, device="cpu"),
    )  # fmt: skip
    with h5py.File(samples) as handle:
        images, prompts = handle["images"][()], [p.decode() for p in handle["prompts"][()]]
    assert prompts[1] != prompts[2]

    def regenerate(path: Path, target: int) -> np.ndarray:
        out = tmp_path / f"{path.stem}-{target}.h5"
        image = regenerate_counterfactual(
            str(trained), str(path), str(out), method="trak", target=target,
            runtime=Runtime(batch_size=8, device="cpu"),
        )  # fmt: skip
        with h5py.File(out) as handle:
            assert handle.attrs["prompt"] == prompts[target] or path != samples
        return image

    for target in (1, 2):
        np.testing.assert_array_equal(regenerate(samples, target), images[target])
    variants = {"prompts": tmp_path / "swapped.h5", "guidance": tmp_path / "guidance.h5"}
    for kind, path in variants.items():
        shutil.copy(samples, path)
        with h5py.File(path, "r+") as handle:
            if kind == "prompts":
                del handle["prompts"]
                handle.create_dataset("prompts", data=prompts[::-1], dtype=h5py.string_dtype())
            else:
                handle.attrs["guidance_scale"] = 1.0
        assert not np.allclose(regenerate(path, 1), images[1]), kind


# --------------------------------------------------------------------------- the workflow


def sd_config(fixture_dir: Path) -> dict:
    import yaml

    text = (ROOT / "tests" / "config-sd-tiny.yaml").read_text()
    return yaml.safe_load(text.replace("FIXTURE", str(fixture_dir)))


@pytest.fixture(scope="module")
def sd_fixture(base) -> Path:
    directory = base.parent
    build_captioned_imagefolder(directory / "images")
    return directory


def test_missing_base_model_fails_before_any_job(sd_fixture, tmp_path):
    config = sd_config(sd_fixture)
    config["model"]["base"] = str(tmp_path / "no-such-model")
    path = write_config(tmp_path, config)
    with pytest.raises(AssertionError, match="model.base"):
        snakemake(tmp_path, path, "-n")
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_tiny_stable_diffusion_workflow_end_to_end(sd_fixture, tmp_path):
    path = write_config(tmp_path, sd_config(sd_fixture))
    results = tmp_path / "results" / "sd-tiny"
    target = "results/sd-tiny/summary.csv"  # the LDS table; the report figures are left out
    snakemake(tmp_path, path, "--cores", "2", target, timeout=1800)
    with open(results / "summary.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["method"] for r in rows} == {"dtrak"}
    # gen reports val's held-out λ (lds.gen_lambda: val), its own choice beside it
    assert {r["lambda_choice"] for r in rows} == {"heldout", "oracle", "heldout_own"}
    assert {r["split"] for r in rows if r["lambda_choice"] == "heldout_own"} == {"gen"}
    assert {r["split"] for r in rows} == {"val", "gen"}
    for row in rows:
        assert math.isfinite(float(row["lds"])) and -100 <= float(row["lds"]) <= 100
    with h5py.File(results / "samples" / "gen.h5") as handle:
        prompts = [p.decode() for p in handle["prompts"][()]]
    assert prompts == ["a ukiyo e painting"] * 3 + ["a baroque painting"] * 3
    main = results / "models" / "main"
    assert (main / "lora" / "adapter_model.safetensors").is_file()
    assert not (main / "unet").exists(), "the base UNet is never saved"
    (train_features,) = results.glob("features/*/square/*/K2/train.h5")
    with h5py.File(train_features) as handle:
        grad_dim = int(handle.attrs["grad_dim"])
    assert grad_dim == num_trainable_parameters(load_diffusion_model(main).denoiser)
    assert planned_jobs(tmp_path, path, "--", target) == {}
