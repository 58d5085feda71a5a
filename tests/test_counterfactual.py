"""Counterfactual evaluation: removal sets, bit-exact regeneration, metrics vs direct formulas."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

from diffattr import counterfactual as cf
from diffattr import data, store
from diffattr.config import validate_config
from diffattr.errors import ConfigError, DataError
from diffattr.jobs import counterfactual as cfjobs
from diffattr.plan import counterfactual_top_k, resolve_counterfactual
from diffattr.settings import (
    CounterfactualLambdaSettings,
    CounterfactualMetricSettings,
    GenerationSettings,
    LdsSettings,
    RemovalSettings,
    Runtime,
)

# --------------------------------------------------------------------------- removal sets


def test_top_k_removal_excludes_exactly_the_top_k():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=200)
    scores[[3, 50, 120]] = scores.max() + 1  # a three-way tie at the top
    k = 40
    removed, kept = cf.top_k_removal(scores, k)
    assert removed.size == k and kept.size == 200 - k
    assert not set(removed) & set(kept) and set(removed) | set(kept) == set(range(200))
    assert scores[kept].max() <= scores[removed].min()
    expected = set(np.argsort(scores)[::-1][:k].tolist())
    assert set(removed.tolist()) == expected
    assert np.all(np.diff(scores[removed]) <= 0), "removed rows are ranked by score"
    assert removed[:3].tolist() == [3, 50, 120], "ties go to the lower position"
    assert np.all(np.diff(kept) > 0)


@pytest.mark.parametrize("k", [0, 200])
def test_top_k_removal_must_leave_rows(k):
    with pytest.raises(DataError, match="cannot remove"):
        cf.top_k_removal(np.zeros(200), k)


def test_resolve_top_k():
    assert cf.resolve_top_k(5000, None, 0.2) == 1000
    assert cf.resolve_top_k(600, 7, 0.2) == 7
    with pytest.raises(DataError, match="top_k = 600"):
        cf.resolve_top_k(600, 600, 0.2)


def test_the_plan_counts_the_rows_a_removal_takes(tiny_config):
    config = _config(tiny_config, top_k=None, top_fraction=0.25)
    n = config["data"]["train_size"]
    assert counterfactual_top_k(config) == cf.resolve_top_k(n, None, 0.25)
    config["counterfactual"]["top_k"] = n
    with pytest.raises(DataError, match=f"top_k = {n}"):
        counterfactual_top_k(config)


def test_targets_are_distinct_seeded_and_prefix_stable():
    first = cf.select_targets(100, 8, 42)
    assert len(set(first)) == 8 and all(0 <= t < 100 for t in first)
    assert cf.select_targets(100, 12, 42)[:8] == first
    assert cf.select_targets(100, 8, 43) != first
    with pytest.raises(ConfigError, match="num_targets"):
        cf.select_targets(5, 6, 0)


def test_targets_and_random_scores_follow_the_reference_draws():
    from sklearn.model_selection import train_test_split

    _, reference = train_test_split(list(range(1000)), test_size=60, random_state=42)
    assert cf.select_targets(1000, 60, 42) == reference
    np.random.seed(42)
    matrix = np.random.rand(12, 30)  # the reference's random "score matrix" [gen, N]
    assert all(np.array_equal(cf.random_scores(30, 42, t), matrix[t]) for t in (0, 5, 11))


def _scores_file(path, scores, train_ids, test_ids, lambdas):
    store.write_h5(
        path,
        {
            "scores": scores.astype(np.float32),
            "lambdas": np.asarray(lambdas, np.float64),
            "train_ids": train_ids,
            "test_ids": test_ids,
        },
        {"method": "trak", "split": "gen", "lds_sign": -1},
    )


def _dataset_ids(path, n_train):
    """A dataset file whose train split has ``n_train`` rows (ids 100, 101, ...)."""
    train = {
        "train/ids": np.arange(100, 100 + n_train),
        "train/labels": np.zeros(n_train, dtype=np.int64),
        "train/images": np.zeros((n_train, 1, 2, 2), dtype=np.float32),
    }
    store.write_h5(path, train, {"kind": "dataset"})


def test_removal_file_keeps_everything_but_the_top_k_at_the_chosen_lambda(tmp_path):
    n_train, n_gen = 30, 5
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(3, n_gen, n_train))
    _dataset_ids(tmp_path / "dataset.h5", n_train)
    _scores_file(
        tmp_path / "gen.h5", scores, np.arange(100, 100 + n_train), np.arange(n_gen), [1, 10, 100]
    )
    store.write_json(tmp_path / "choice.json", {"lambda": 10.0, "lambda_index": 1, "K": 4})
    cfjobs.remove_top_examples(
        str(tmp_path / "dataset.h5"),
        str(tmp_path / "removal.h5"),
        settings=RemovalSettings(method="trak", target=3, top_k=6, top_fraction=0.2, random_seed=0),
        scores_path=str(tmp_path / "gen.h5"),
        lambda_path=str(tmp_path / "choice.json"),
    )
    kept = data.read_subset(tmp_path / "removal.h5")  # usable as a training subset as is
    removed = store.read_h5(tmp_path / "removal.h5", "removed")
    top = np.argsort(-scores[1, 3].astype(np.float32), kind="stable")[:6]
    assert removed.tolist() == top.tolist()
    assert kept.tolist() == sorted(set(range(n_train)) - set(top.tolist()))
    attrs = store.read_attrs(tmp_path / "removal.h5")
    assert (attrs["lambda"], attrs["lambda_index"], attrs["top_k"]) == (10.0, 1, 6)


def test_scores_in_loss_units_remove_the_most_negative(tmp_path):
    """Methods with lds_sign +1 (empirical influence, datamodels): helpful rows score lowest."""
    scores = np.arange(20, dtype=np.float64).reshape(1, 1, 20)
    _dataset_ids(tmp_path / "dataset.h5", 20)
    store.write_h5(
        tmp_path / "gen.h5",
        {"scores": scores, "lambdas": [0.0], "train_ids": np.arange(100, 120), "test_ids": [4]},
        {"lds_sign": 1},
    )
    store.write_json(tmp_path / "choice.json", {"lambda": 0.0, "lambda_index": 0, "K": 0})
    removed = cfjobs.remove_top_examples(
        str(tmp_path / "dataset.h5"), str(tmp_path / "removal.h5"),
        settings=RemovalSettings(method="datamodels", target=4, top_k=3, random_seed=0),
        scores_path=str(tmp_path / "gen.h5"), lambda_path=str(tmp_path / "choice.json"),
    )  # fmt: skip
    assert removed.tolist() == [0, 1, 2]


def test_k_free_methods_use_their_k0_scores(tiny_config):
    config = copy.deepcopy(tiny_config)
    config["methods"] = {**config.get("methods", {}), "raw_cos": {"kind": "raw_cos"}}
    config["counterfactual"] = {**config["counterfactual"], "methods": ["raw_cos", "random"]}
    block = resolve_counterfactual(validate_config(config))
    assert block["method_K"] == {"raw_cos": 0}


@pytest.mark.parametrize("sign", [-1, 1])
def test_lambda_choice_is_the_one_the_lds_record_reports(tmp_path, sign):
    from diffattr.jobs.lds import evaluate_lds

    rng = np.random.default_rng(5)
    n_train, n_gen, n_subsets = 24, 6, 10
    masks = rng.random((n_subsets, n_train)) < 0.5
    truth = masks.astype(float) @ rng.normal(size=(n_train, n_gen))  # outputs linear in masks
    store.write_h5(
        tmp_path / "heldout.h5",
        {
            "masks": masks,
            "train_ids": np.arange(n_train),
            "gen/measured": truth,
            "gen/measured_by_seed": truth[None],
            "gen/ids": np.arange(n_gen),
        },
        {"pool": "heldout"},
    )
    scores = rng.normal(size=(4, n_gen, n_train)) * np.array([0.5, 1, 3, 0.1])[:, None, None]
    scores[2] += sign * 2 * np.linalg.lstsq(masks.astype(float), truth, rcond=None)[0].T
    store.write_h5(
        tmp_path / "gen.h5",
        {"scores": scores, "lambdas": [1, 10, 100, 1000], "train_ids": np.arange(n_train),
         "test_ids": np.arange(n_gen)},
        {"lds_sign": sign},
    )  # fmt: skip
    paths = [str(tmp_path / name) for name in ("gen.h5", "heldout.h5")]
    choice = cfjobs.choose_counterfactual_lambda(
        *paths,
        str(tmp_path / "choice.json"),
        settings=CounterfactualLambdaSettings(method="m", K=3),
    )
    settings = LdsSettings(split="gen", bootstrap_resamples=4, bootstrap_seed=0)
    record = evaluate_lds(
        paths[0], paths[1], paths[1], str(tmp_path / "lds.json"), settings=settings
    )
    assert choice["lambda_index"] == record["choices"]["heldout"]["lambda_index"] == 2
    np.testing.assert_allclose(choice["heldout_curve"], record["heldout_curve"])


def test_random_removal_is_seeded_per_target(tmp_path):
    _dataset_ids(tmp_path / "dataset.h5", 50)

    def removed(target, seed, name):
        path = str(tmp_path / name)
        settings = RemovalSettings(method=cf.RANDOM, target=target, top_k=None, random_seed=seed)
        cfjobs.remove_top_examples(str(tmp_path / "dataset.h5"), path, settings=settings)
        return store.read_h5(path, "removed")

    first = removed(7, 42, "a.h5")
    assert first.size == 10
    assert np.array_equal(first, removed(7, 42, "b.h5"))
    assert not np.array_equal(first, removed(8, 42, "c.h5"))


# --------------------------------------------------------------------------- regeneration


@pytest.fixture(params=[0.0, 1.0], ids=["eta0", "eta1"])
def generated(request, tmp_path, tiny_unet_config):
    """A tiny random-weight model and 6 samples generated from it in batches of 4 and of 1, with
    deterministic DDIM and with η = 1 (fresh noise each step, drawn per sample)."""
    import torch

    from diffattr.jobs.generate import generate_samples
    from diffattr.models import build_scheduler, build_unet, save_model
    from tests.conftest import SCHEDULER

    torch.manual_seed(0)
    model_dir = tmp_path / "model"
    save_model(build_unet(tiny_unet_config), build_scheduler(SCHEDULER), model_dir)
    paths = {}
    for batch_size in (4, 1):
        paths[batch_size] = tmp_path / f"gen-b{batch_size}.h5"
        grid = tmp_path / f"gen-b{batch_size}.png"
        generate_samples(
            str(model_dir), None, str(paths[batch_size]), str(grid),
            settings=GenerationSettings(
                num_samples=6, steps=3, eta=request.param, seed=0, grid_columns=2
            ),
            runtime=Runtime(batch_size=batch_size, device="cpu"),
        )  # fmt: skip
    return model_dir, paths


@pytest.mark.parametrize("batch_size", [4, 1])
@pytest.mark.parametrize("target", [1, 5])
def test_regeneration_with_the_main_model_is_bit_identical(generated, tmp_path, batch_size, target):
    model_dir, paths = generated
    out = tmp_path / "regen.h5"
    image = cfjobs.regenerate_counterfactual(
        str(model_dir), str(paths[batch_size]), str(out), method="main", target=target,
        runtime=Runtime(batch_size=batch_size, device="cpu"),
    )  # fmt: skip
    original = store.read_h5(paths[batch_size], "images")[target]
    assert image.dtype == original.dtype and np.array_equal(image, original)
    attrs = store.read_attrs(out)
    assert attrs["seed"] == target and attrs["batch_size"] == batch_size


def test_regeneration_uses_the_stored_batch_layout(generated, tmp_path):
    """generation.batch_size is not a param: a changed value must not change the regeneration."""
    model_dir, paths = generated
    out = tmp_path / "r.h5"
    image = cfjobs.regenerate_counterfactual(
        str(model_dir), str(paths[4]), str(out), method="m", target=1,
        runtime=Runtime(batch_size=2, device="cpu"),
    )  # fmt: skip
    assert np.array_equal(image, store.read_h5(paths[4], "images")[1])
    assert store.read_attrs(out)["batch_size"] == 4


# --------------------------------------------------------------------------- metrics


def _slow_ssim(x, y, size, sigma=1.5, data_range=2.0):
    """SSIM straight from Wang et al. (2004), eq. 13 with Gaussian-weighted local statistics."""
    offsets = np.arange(size) - (size - 1) / 2
    w1 = np.exp(-(offsets**2) / (2 * sigma**2))
    window = np.outer(w1, w1) / np.outer(w1, w1).sum()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    values = []
    for a, b in zip(x, y, strict=True):
        for i in range(a.shape[0] - size + 1):
            for j in range(a.shape[1] - size + 1):
                pa, pb = a[i : i + size, j : j + size], b[i : i + size, j : j + size]
                mu_a, mu_b = (window * pa).sum(), (window * pb).sum()
                var_a = (window * (pa - mu_a) ** 2).sum()
                var_b = (window * (pb - mu_b) ** 2).sum()
                cov = (window * (pa - mu_a) * (pb - mu_b)).sum()
                values.append(
                    (2 * mu_a * mu_b + c1)
                    * (2 * cov + c2)
                    / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
                )
    return float(np.mean(values))


@pytest.mark.parametrize("shape, size", [((1, 8, 8), 7), ((3, 16, 13), 11), ((2, 5, 9), 5)])
def test_ssim_matches_the_direct_formula(shape, size):
    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, size=shape)
    y = np.clip(x + rng.normal(scale=0.3, size=shape), -1, 1)
    assert cf.ssim(x, y) == pytest.approx(_slow_ssim(x, y, size), rel=1e-10, abs=1e-12)
    assert cf.ssim(x, x) == pytest.approx(1.0, abs=1e-12)
    assert cf.ssim(x[0], y[0]) == pytest.approx(cf.ssim(x[:1], y[:1]))


def test_l2_matches_the_direct_formula():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(1, 8, 8)), rng.normal(size=(1, 8, 8))
    direct = math.sqrt(sum((a - b) ** 2 for a, b in zip(x.ravel(), y.ravel(), strict=True)))
    assert cf.l2_distance(x, y) == pytest.approx(direct, rel=1e-12)
    assert cf.l2_distance(x, x) == 0.0


def test_clip_cosine_is_the_cosine_of_the_embeddings():
    rng = np.random.default_rng(4)
    projection = rng.normal(size=(64, 5))

    def encode(images):
        return images.reshape(len(images), -1) @ projection

    x, y = rng.normal(size=(1, 8, 8)), rng.normal(size=(1, 8, 8))
    a, b = x.ravel() @ projection, y.ravel() @ projection
    direct = sum(a * b) / math.sqrt(sum(a * a) * sum(b * b))
    assert cf.clip_cosine(x, y, encode) == pytest.approx(direct, rel=1e-6)


def test_clip_weights_must_be_a_checkpoint(tmp_path):
    from diffattr.clip import ClipEncoder

    with pytest.raises(ConfigError, match="not a checkpoint folder"):
        ClipEncoder(str(tmp_path / "missing.bin"))


def test_aggregates_match_direct_counts():
    values = {
        "dtrak": {"l2": [3.0, 1.0, 5.0], "ssim": [0.2, 0.9, 0.1]},
        "random": {"l2": [1.0, 2.0, 4.0], "ssim": [0.5, 0.5, 0.5]},
    }
    stats = {(r["method"], r["metric"]): r for r in cf.metric_statistics(values)}
    assert stats["dtrak", "l2"]["median"] == 3.0 and stats["dtrak", "l2"]["mean"] == 3.0
    assert stats["random", "ssim"]["n_targets"] == 3
    paired = {r["metric"]: r for r in cf.paired_fractions(values, ["dtrak", "random"])}
    assert paired["l2"]["fraction_more_change"] == pytest.approx(2 / 3)  # larger l2: 3>1, 5>4
    assert paired["ssim"]["fraction_more_change"] == pytest.approx(2 / 3)  # lower SSIM: 0.2, 0.1
    overlap = cf.removal_overlap(
        {
            "a": {0: np.array([1, 2]), 1: np.array([5])},
            "b": {0: np.array([2, 3]), 1: np.array([5])},
        },
        ["a", "b"],
    )
    assert overlap[0]["mean_jaccard"] == pytest.approx((1 / 3 + 1) / 2)


# --------------------------------------------------------------------------- configuration


def _config(tiny_config, **counterfactual):
    config = copy.deepcopy(tiny_config)
    config["counterfactual"] = {"enabled": True, **counterfactual}
    return validate_config(config)


def test_resolved_block_defaults(tiny_config):
    block = resolve_counterfactual(_config(tiny_config, num_targets=3))
    assert block["method_K"] == {m: max(tiny_config["features"]["K"]) for m in ("dtrak", "trak")}
    assert block["score_methods"] == ["dtrak", "trak"]
    assert block["targets"] == cf.select_targets(tiny_config["generation"]["num_samples"], 3, 42)


def test_unknown_method_names_the_valid_ones(tiny_config):
    with pytest.raises(ConfigError, match=r"\['tracin'\].*'dtrak', 'trak', 'random'"):
        resolve_counterfactual(_config(tiny_config, methods=["tracin", "random"]))


def test_disabled_block_is_not_checked(tiny_config):
    config = _config(tiny_config, methods=["tracin"])
    config["counterfactual"]["enabled"] = False
    assert resolve_counterfactual(config)["targets"] == []


def test_counterfactual_needs_gen_lds_and_a_configured_k(tiny_config):
    config = _config(tiny_config)
    config["lds"]["splits"] = ["val"]
    with pytest.raises(ConfigError, match="'gen'"):
        resolve_counterfactual(config)
    with pytest.raises(ConfigError, match="not a K of method 'dtrak'"):
        resolve_counterfactual(_config(tiny_config, K=999))


def test_latent_model_regenerates_with_its_prompt_and_measures_latent_l2(tmp_path):
    """SD + LoRA: the target's prompt and guidance are reused; ℓ2 is between VAE latent modes."""
    import torch

    from diffattr.jobs.generate import generate_samples
    from diffattr.models import build_model, load_diffusion_model
    from tests.sd_fixture import build_tiny_sd

    base = build_tiny_sd(tmp_path / "tiny-sd")
    lora = {"rank": 4, "alpha": None, "target_modules": ["to_q", "to_k", "to_v", "to_out.0"]}
    torch.manual_seed(0)
    build_model({"kind": "sd_lora", "base": str(base), "lora": lora}, {}).save(tmp_path / "main")
    samples = tmp_path / "gen.h5"
    prompts = ["a baroque painting", "a ukiyo e painting"]
    generate_samples(
        str(tmp_path / "main"), None, str(samples), str(tmp_path / "gen.png"),
        settings=GenerationSettings(num_samples=4, steps=3, eta=0.0, seed=0, grid_columns=2,
                                    guidance_scale=7.5, prompts=prompts),
        runtime=Runtime(batch_size=2, device="cpu"),
    )  # fmt: skip
    regenerated = tmp_path / "regen.h5"
    image = cfjobs.regenerate_counterfactual(
        str(tmp_path / "main"), str(samples), str(regenerated), method="m", target=3,
        runtime=Runtime(batch_size=2, device="cpu"),
    )  # fmt: skip
    assert np.array_equal(image, store.read_h5(samples, "images")[3])
    assert store.read_attrs(regenerated)["prompt"] == prompts[1]

    shifted = tmp_path / "shifted.h5"
    store.write_h5(shifted, {"image": np.clip(image + 0.3, -1, 1)}, {"method": "m", "target": 3})
    out = tmp_path / "metrics.json"
    record = cfjobs.compare_counterfactual(
        str(samples), str(shifted), str(out),
        settings=CounterfactualMetricSettings(metrics=["l2", "ssim"], clip_weights=None),
        runtime=Runtime(batch_size=1, device="cpu"), latent_model_dir=str(tmp_path / "main"),
    )  # fmt: skip
    model = load_diffusion_model(tmp_path / "main")
    latents = model.encode(np.stack([image, np.clip(image + 0.3, -1, 1)]), scaled=False).numpy()
    assert record["space"] == "latent"
    assert record["metrics"]["l2"] == pytest.approx(float(np.linalg.norm(latents[0] - latents[1])))
    assert record["metrics"]["ssim"] == pytest.approx(cf.ssim(image, np.clip(image + 0.3, -1, 1)))
