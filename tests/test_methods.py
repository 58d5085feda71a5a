"""Attribution methods (protocol §5): each scorer against a direct formula on small random inputs,
the registry and its config validation, and the LDS sign a score file carries."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from diffattr import lds, methods, store
from diffattr.config import validate_config
from diffattr.errors import ConfigError, FeatureMismatchError
from diffattr.files import read_scores
from diffattr.jobs.scores import score_method
from diffattr.methods import get_method, method_kinds
from diffattr.methods.retrain import datamodel_coefficients
from diffattr.methods.trak import OUTPUT_FNS
from diffattr.settings import Runtime, ScoreSettings

ROOT = Path(__file__).resolve().parents[1]
LAMBDAS = [0.05, 1.0, 30.0]
N_TRAIN, N_TEST, DIM = 14, 5, 9
FEATURE_ATTRS = {
    "proj_kind": "normal",
    "proj_seed": 1,
    "proj_dim": DIM,
    "output_fn": "loss",
    "timesteps": [0, 500],
    "noise_seed": 0,
    "noise": "common",
    "noise_batch_size": 0,
    "noise_shard_rows": 0,
    "model_digest": "main",
}


def random_matrix(rows: int, cols: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, cols))


def write_features(path: Path, matrix: np.ndarray, **attrs) -> str:
    ids = np.arange(len(matrix), dtype=np.int64) + (100 if "test" in path.name else 0)
    store.write_h5(
        path, {"features": matrix.astype(np.float32), "ids": ids}, {**FEATURE_ATTRS, **attrs}
    )
    return str(path)


def pair(
    tmp_path: Path, seed: int, name: str = "main", **attrs
) -> tuple[str, str, np.ndarray, np.ndarray]:
    """Train and test feature files of one model; returns paths and the float32-rounded matrices."""
    phi = random_matrix(N_TRAIN, DIM, seed).astype(np.float32).astype(np.float64)
    psi = random_matrix(N_TEST, DIM, seed + 1).astype(np.float32).astype(np.float64)
    train = write_features(tmp_path / f"{name}-train.h5", phi, **attrs)
    test = write_features(tmp_path / f"{name}-test.h5", psi, **attrs)
    return train, test, phi, psi


def run(
    kind: str,
    inputs: dict,
    tmp_path: Path,
    params: dict | None = None,
    K: int = 2,
    split: str = "val",
):
    """Score one method; a ridge-λ kind writes a spectra file, read back at every λ."""
    from diffattr import spectral

    out = tmp_path / f"{kind}.h5"
    params = params if params is not None else {"output_fn": "loss"}
    settings = ScoreSettings(
        method=f"my-{kind}", kind=kind, params=params, K=K, split=split, lambdas=LAMBDAS,
        chunk_rows=4,
    )  # fmt: skip
    score_method(inputs, str(out), settings=settings, runtime=Runtime(batch_size=32))
    if not get_method(kind).writes_spectra(params):
        return read_scores(out)
    scores = tmp_path / f"{kind}-scores.h5"
    train = inputs["train"]
    with spectral.open_scores(out, LAMBDAS, [train] if isinstance(train, str) else train) as grid:
        spectral.write_selected_scores(grid, scores, range(len(LAMBDAS)))
    return read_scores(scores)


def naive_trak(phi: np.ndarray, psi: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """(τ, G⁻¹) with one explicit inverse."""
    inverse = np.linalg.inv(phi.T @ phi + lam * np.eye(phi.shape[1]))
    return psi @ inverse @ phi.T, inverse


def close(actual: np.ndarray, expected: np.ndarray, rtol: float = 2e-5) -> None:
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rtol * np.abs(expected).max())


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a / np.linalg.norm(a, axis=1, keepdims=True)) @ (
        b / np.linalg.norm(b, axis=1, keepdims=True)
    ).T


# --------------------------------------------------------------------------- registry and config


def test_every_kind_is_in_the_schema_and_every_output_function_is_known():
    from diffattr.outputs import _REGISTRY

    schema = yaml.safe_load(
        (ROOT / "src" / "diffattr" / "schemas" / "config.schema.yaml").read_text()
    )
    kinds = schema["properties"]["methods"]["additionalProperties"]["properties"]["kind"]["enum"]
    assert sorted(kinds) == method_kinds()
    assert set(OUTPUT_FNS) == set(_REGISTRY)
    with pytest.raises(ConfigError, match="valid kinds are: clip_cos"):
        get_method("trak2")


def tiny(**changes) -> dict:
    config = yaml.safe_load((ROOT / "tests" / "config-tiny.yaml").read_text())
    config.update(changes)
    return config


def test_defaults_are_filled_per_kind():
    config = validate_config(
        tiny(
            methods={
                "t": {"kind": "trak"},
                "g": {"kind": "gas", "K": [2, 10]},
                "d": {"kind": "datamodels"},
                "r": {"kind": "raw_cos"},
            },
            subsets={**tiny()["subsets"], "retrain": {"num_subsets": 4, "seed": 9}},
        )
    )
    noise = config["features"]["noise"]
    assert config["methods"]["t"] == {
        "kind": "trak",
        "noise": noise,
        "output_fn": "loss",
        "timestep_norm": False,
        "readout": "signed",
    }
    assert config["methods"]["g"] == {
        "kind": "gas",
        "K": [2, 10],
        "noise": noise,
        "output_fn": "loss",
        "timestep_norm": False,
        "checkpoints": [25, 50, 75, 100],
    }
    assert config["methods"]["d"] == {
        "kind": "datamodels",
        "num_models": None,
        "alphas": [0.1, 1, 10],
        "cv_folds": 5,
    }
    assert methods.method_Ks(config, "r") == [0] and methods.method_Ks(config, "t") == [2]
    assert methods.method_Ks(config, "g") == [2, 10]
    assert validate_config(config)["methods"] == config["methods"], "validation is idempotent"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            {"kind": "raw_dot", "output_fn": "loss"},
            "methods.x: key 'output_fn' is not a parameter of kind 'raw_dot'; valid keys: kind",
        ),
        ({"kind": "datamodels", "K": [10]}, "key 'K' is not a parameter of kind 'datamodels'"),
        ({"kind": "ensemble_trak"}, "methods.x: kind 'ensemble_trak' needs 'num_models'"),
        ({"kind": "tracin", "checkpoints": [0, 25]}, "checkpoints"),
        ({"kind": "empirical_influence"}, "needs a retrain pool; add subsets.retrain"),
    ],
)
def test_bad_method_entries_name_the_method_and_key(entry, message):
    with pytest.raises(ConfigError) as error:
        validate_config(tiny(methods={"x": entry}))
    assert message in str(error.value)


def test_retrain_pool_must_be_large_enough_and_have_its_own_seed():
    subsets = tiny()["subsets"]
    with pytest.raises(ConfigError, match="num_models = 5 exceeds subsets.retrain.num_subsets = 4"):
        validate_config(
            tiny(
                methods={"e": {"kind": "ensemble_trak", "num_models": 5}},
                subsets={**subsets, "retrain": {"num_subsets": 4, "seed": 9}},
            )
        )
    with pytest.raises(ConfigError, match="its own seed"):
        validate_config(
            tiny(
                methods={"e": {"kind": "datamodels"}},
                subsets={**subsets, "retrain": {"num_subsets": 4, "seed": subsets["lds"]["seed"]}},
            )
        )


def test_journey_needs_gen_queries_and_clip_is_skipped_without_weights(tmp_path):
    with pytest.raises(ConfigError, match="scores only \\['gen'\\] queries"):
        validate_config(tiny(methods={"j": {"kind": "journey_trak"}}, lds={"splits": ["val"]}))
    config = validate_config(tiny(methods={"c": {"kind": "clip_cos"}, "t": {"kind": "trak"}}))
    runnable, skipped = methods.runnable_methods(config)
    assert list(runnable) == ["t"] and "clip.weights is not set" in skipped["c"]
    config["clip"]["weights"] = str(tmp_path / "clip.bin")
    assert "not a checkpoint folder" in get_method("clip_cos").unavailable_reason(config)
    (tmp_path / "clip").mkdir()
    (tmp_path / "clip" / "config.json").write_text("{}")
    config["clip"]["weights"] = str(tmp_path / "clip")
    assert get_method("clip_cos").unavailable_reason(config) is None


def test_targets_and_needs_follow_each_kind():
    config = validate_config(
        tiny(
            methods={
                "j": {"kind": "journey_trak"},
                "tr": {"kind": "tracin", "checkpoints": [50, 100]},
                "raw": {"kind": "raw_dot"},
            },
            features={**tiny()["features"], "K": [2, 4]},
        )
    )
    targets = methods.method_targets(config, config["methods"])
    assert ("j", 2, "gen") in targets and ("j", 2, "val") not in targets
    assert ("raw", 0, "val") in targets and ("raw", 2, "val") not in targets
    needs = methods.method_needs(config, "tr", 4, "val")
    assert [n.fields["ckpt"] for n in needs["train"]] == ["main-50", "main"]
    assert {n.fields["split"] for n in needs["test"]} == {"val"}
    with pytest.raises(ConfigError, match="not scored at K=10"):
        methods.method_needs(config, "tr", 10, "val")
    assert methods.job_params(config, "tr") == {
        "noise": config["features"]["noise"],
        "output_fn": "loss",
        "timestep_norm": False,
        "checkpoints": [50, 100],
    }


# --------------------------------------------------------------------------- gradient-feature scorers


@pytest.mark.parametrize(
    ("kind", "normalise"),
    [
        ("trak", lambda tau, phi, inverse: tau),
        ("relative_if", lambda tau, phi, inverse: tau / np.linalg.norm(phi @ inverse, axis=1)),
        ("renormalized_if", lambda tau, phi, inverse: tau / np.linalg.norm(phi, axis=1)),
    ],
)
def test_trak_family_matches_explicit_inverse(tmp_path, kind, normalise):
    train, test, phi, psi = pair(tmp_path, 0)
    result = run(kind, {"train": train, "test": test}, tmp_path)
    assert result.scores.shape == (len(LAMBDAS), N_TEST, N_TRAIN)
    for index, lam in enumerate(LAMBDAS):
        tau, inverse = naive_trak(phi, psi, lam)
        close(result.scores[index], normalise(tau, phi, inverse))
    assert result.attrs["lds_sign"] == -1 and result.attrs["K"] == 2
    assert result.attrs["method"] == f"my-{kind}" and result.attrs["kind"] == kind


@pytest.mark.parametrize("form", ["primal", "dual"])
@pytest.mark.parametrize("normalize", ["relative", "renormalized"])
def test_normalised_trak_in_both_forms_streamed_and_in_memory(tmp_path, form, normalize):
    from diffattr.scoring import TrakOptions, trak_scores, write_trak_scores

    phi = random_matrix(6, DIM, 4).astype(np.float32).astype(np.float64)  # N < Z
    psi = random_matrix(N_TEST, DIM, 5).astype(np.float32).astype(np.float64)
    train = write_features(tmp_path / "train.h5", phi)
    test = write_features(tmp_path / "test.h5", psi)
    out = tmp_path / "scores.h5"
    options = TrakOptions(form=form, normalize=normalize, chunk_rows=4)
    write_trak_scores(train, test, out, LAMBDAS, {}, options)
    in_memory = trak_scores(phi, psi, LAMBDAS, form=form, normalize=normalize)
    for index, lam in enumerate(LAMBDAS):
        tau, inverse = naive_trak(phi, psi, lam)
        rows = phi @ inverse if normalize == "relative" else phi
        expected = tau / np.linalg.norm(rows, axis=1)
        close(read_scores(out).scores[index], expected, rtol=1e-4)
        close(in_memory[index], expected, rtol=1e-4)


@pytest.mark.parametrize("kind", ["grad_dot", "grad_cos"])
def test_gradient_similarity_at_the_final_checkpoint(tmp_path, kind):
    train, test, phi, psi = pair(tmp_path, 3)
    result = run(kind, {"train": [train], "test": [test]}, tmp_path)
    expected = psi @ phi.T if kind == "grad_dot" else cosine(psi, phi)
    assert result.lambdas.tolist() == [0.0]
    close(result.scores[0], expected)


@pytest.mark.parametrize("kind", ["tracin", "gas"])
def test_tracin_and_gas_average_over_checkpoints(tmp_path, kind):
    files = [pair(tmp_path, 10 * c, name=f"ckpt{c}", model_digest=f"d{c}") for c in range(4)]
    inputs = {"train": [f[0] for f in files], "test": [f[1] for f in files]}
    result = run(kind, inputs, tmp_path, {"output_fn": "loss", "checkpoints": [25, 50, 75, 100]})
    similarity = (lambda a, b: a @ b.T) if kind == "tracin" else cosine
    close(result.scores[0], np.mean([similarity(f[3], f[2]) for f in files], axis=0))


def test_checkpoint_features_from_different_models_are_refused(tmp_path):
    train, _, _, _ = pair(tmp_path, 0, name="a", model_digest="one")
    _, test, _, _ = pair(tmp_path, 0, name="b", model_digest="two")
    with pytest.raises(FeatureMismatchError, match="model_digest"):
        run("grad_dot", {"train": [train], "test": [test]}, tmp_path)


def test_ensemble_averages_member_trak_scores(tmp_path):
    members = [pair(tmp_path, 5 * m, name=f"retrain-{m}", model_digest=f"m{m}") for m in range(3)]
    inputs = {"train": [m[0] for m in members], "test": [m[1] for m in members]}
    result = run("ensemble_trak", inputs, tmp_path, {"output_fn": "loss", "num_models": 3})
    for index, lam in enumerate(LAMBDAS):
        expected = np.mean([naive_trak(m[2], m[3], lam)[0] for m in members], axis=0)
        close(result.scores[index], expected)
    other = pair(tmp_path, 99, name="odd", model_digest="m9", noise_seed=5)
    with pytest.raises(FeatureMismatchError, match="noise_seed"):
        run(
            "ensemble_trak",
            {"train": [inputs["train"][0], other[0]], "test": [inputs["test"][0], other[1]]},
            tmp_path,
            {"output_fn": "loss", "num_models": 2},
        )


def test_journey_scores_trajectory_features_with_the_trak_kernel(tmp_path):
    phi = random_matrix(N_TRAIN, DIM, 1).astype(np.float32).astype(np.float64)
    psi = random_matrix(N_TEST, DIM, 2).astype(np.float32).astype(np.float64)
    train = write_features(tmp_path / "train.h5", phi)
    test = write_features(
        tmp_path / "test.h5", psi, timesteps=[980, 960, 0], t_strategy="trajectory"
    )
    result = run("journey_trak", {"train": train, "test": test}, tmp_path, split="gen")
    for index, lam in enumerate(LAMBDAS):
        close(result.scores[index], naive_trak(phi, psi, lam)[0])


def test_trajectory_gradients_average_per_step_gradients():
    from diffusers import DDPMScheduler, UNet2DModel

    from diffattr.features import GradientOptions, per_sample_gradients
    from diffattr.methods.journey import trajectory_gradients
    from diffattr.noise import feature_noise_keys
    from diffattr.projection import make_projector
    from diffattr.queries import QueryRows
    from diffattr.settings import Runtime

    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        attention_head_dim=4,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    ).eval()
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    trajectory = np.random.default_rng(0).uniform(-1, 1, (3, 2, 1, 8, 8)).astype(np.float32)
    timesteps, ids = np.array([700, 0]), np.array([4, 7, 9])
    grad_dim = sum(p.numel() for p in unet.parameters())
    projector = make_projector("normal", grad_dim, 16, 0)
    options = GradientOptions(output_fn="loss", timesteps=timesteps, noise_seed=3)
    got = trajectory_gradients(
        unet,
        scheduler,
        QueryRows(trajectory, ids),
        options,
        projector,
        Runtime(batch_size=2),
    )
    keys = feature_noise_keys("independent", "gen", ids, np.arange(3))
    per_step = [
        per_sample_gradients(
            unet,
            scheduler,
            QueryRows(torch.from_numpy(trajectory[:, s]), ids, noise_keys=keys),
            int(t),
            "loss",
            3,
        )
        for s, t in enumerate(timesteps)
    ]
    close(got, projector.project(torch.stack(per_step).mean(0)).numpy(), rtol=1e-4)


# --------------------------------------------------------------------------- similarity baselines


def small_dataset(tmp_path: Path) -> tuple[str, str]:
    from diffattr.data import prepare_dataset

    dataset = tmp_path / "dataset.h5"
    prepare_dataset(
        {
            "source": "digits",
            "resolution": 8,
            "channels": 1,
            "train_size": 20,
            "val_size": 6,
            "stratify": False,
        },
        dataset,
    )
    images = np.random.default_rng(0).uniform(-1, 1, (4, 1, 8, 8)).astype(np.float32)
    samples = tmp_path / "gen.h5"
    store.write_h5(
        samples, {"images": images, "seeds": np.arange(4), "ids": np.arange(4)}, {"split": "gen"}
    )
    return str(dataset), str(samples)


@pytest.mark.parametrize(("kind", "split"), [("raw_dot", "val"), ("raw_cos", "gen")])
def test_raw_pixel_similarity_of_flattened_images(tmp_path, kind, split):
    from diffattr.data import load_split

    dataset, samples = small_dataset(tmp_path)
    inputs = {"dataset": dataset, "samples": samples, "model": str(tmp_path / "no-model")}
    result = run(kind, inputs, tmp_path, params={}, K=0, split=split)
    train = load_split(dataset, "train").images.reshape(20, -1).astype(np.float64)
    if split == "val":
        test = load_split(dataset, "val").images.reshape(6, -1).astype(np.float64)
    else:
        test = store.read_h5(samples, "images").reshape(4, -1).astype(np.float64)
    close(result.scores[0], test @ train.T if kind == "raw_dot" else cosine(test, train))
    assert result.attrs["K"] == 0


@pytest.mark.parametrize("kind", ["clip_dot", "clip_cos"])
def test_clip_similarity_of_embeddings(tmp_path, kind):
    attrs = {"clip_model": "ViT-B-32", "clip_weights_digest": "abc"}
    phi, psi = random_matrix(N_TRAIN, 6, 0), random_matrix(N_TEST, 6, 1)
    train = write_features(tmp_path / "train.h5", phi.astype(np.float32), **attrs)
    test = write_features(tmp_path / "test.h5", psi.astype(np.float32), **attrs)
    result = run(kind, {"train": train, "test": test}, tmp_path, params={}, K=0)
    phi, psi = phi.astype(np.float32), psi.astype(np.float32)
    close(result.scores[0], psi @ phi.T if kind == "clip_dot" else cosine(psi, phi))


def test_embed_clip_embeds_with_the_transformers_clip(tmp_path):
    """A tiny random CLIP saved with save_pretrained; the embeddings are diffattr.clip's."""
    from diffattr.clip import ClipEncoder
    from diffattr.files import read_features
    from diffattr.jobs.features import embed_clip
    from diffattr.settings import Runtime
    from tests.clip_fixture import build_tiny_clip

    weights = str(build_tiny_clip(tmp_path / "clip"))
    dataset, samples = small_dataset(tmp_path)
    out = tmp_path / "clip-gen.h5"
    runtime = Runtime(batch_size=3, device="cpu")
    embed_clip(dataset, samples, str(out), split="gen", weights=weights, runtime=runtime)
    stored = read_features(out, dtype=np.float32)
    embeddings, ids, attrs = stored.features, stored.ids, stored.attrs
    images = store.read_h5(samples, "images")
    close(embeddings, ClipEncoder(weights)(images), rtol=1e-5)
    assert embeddings.shape == (4, 16) and ids.tolist() == [0, 1, 2, 3]
    assert "CLIPVisionModelWithProjection" in attrs["clip_model"]
    assert len(attrs["clip_weights_digest"]) == 16
    with pytest.raises(ConfigError, match="clip.weights is not set"):
        embed_clip(dataset, samples, str(out), split="gen", weights=None, runtime=runtime)


# --------------------------------------------------------------------------- retrain-pool baselines


def retrain_groundtruth(
    tmp_path: Path, models: int = 23, rows: int = 15, queries: int = 4
) -> tuple[str, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    masks = rng.random((models, rows)) < 0.5
    weights = rng.standard_normal((rows, queries))
    measured = masks @ weights + 0.3 * rng.standard_normal((models, queries))
    path = tmp_path / "retrain.h5"
    store.write_h5(
        path,
        {
            "masks": masks,
            "train_ids": np.arange(rows),
            "val/measured": measured,
            "val/ids": np.arange(queries) + 100,
        },
        {"pool": "retrain"},
    )
    return str(path), masks, measured


def test_empirical_influence_is_the_difference_of_conditional_means(tmp_path):
    path, masks, measured = retrain_groundtruth(tmp_path)
    result = run("empirical_influence", {"retrain": path}, tmp_path, params={"num_models": 20}, K=0)
    masks, measured = masks[:20], measured[:20]
    expected = np.empty((measured.shape[1], masks.shape[1]))
    for j in range(measured.shape[1]):
        for i in range(masks.shape[1]):
            expected[j, i] = measured[masks[:, i], j].mean() - measured[~masks[:, i], j].mean()
    close(result.scores[0], expected)
    assert result.attrs["lds_sign"] == 1 and result.attrs["num_models_used"] == 20


@pytest.mark.parametrize("rows", [15, 40], ids=["N<R", "N>R"])
def test_datamodels_match_sklearn_ridge_cv(tmp_path, rows):
    from sklearn.linear_model import RidgeCV

    _, masks, measured = retrain_groundtruth(tmp_path, models=23, rows=rows)
    coef, chosen = datamodel_coefficients(masks, measured, [0.1, 1, 10], 5)
    for j in range(measured.shape[1]):
        reference = RidgeCV(alphas=[0.1, 1, 10], cv=5).fit(masks.astype(float), measured[:, j])
        assert chosen[j] == reference.alpha_
        close(coef[j], reference.coef_, rtol=1e-8)


def test_datamodels_job_and_too_many_models(tmp_path):
    path, masks, measured = retrain_groundtruth(tmp_path)
    params = {"num_models": None, "alphas": [0.1, 1, 10], "cv_folds": 5}
    result = run("datamodels", {"retrain": path}, tmp_path, params=params, K=0)
    close(result.scores[0], datamodel_coefficients(masks, measured, [0.1, 1, 10], 5)[0])
    assert result.attrs["lds_sign"] == 1
    with pytest.raises(ConfigError, match="has only 23 models"):
        run("datamodels", {"retrain": path}, tmp_path, params={**params, "num_models": 30}, K=0)


def test_lds_job_uses_the_sign_of_the_score_file(tmp_path):
    from diffattr.jobs.lds import evaluate_lds
    from diffattr.settings import LdsSettings

    path, _, _ = retrain_groundtruth(tmp_path, models=30)
    result = run(
        "empirical_influence", {"retrain": path}, tmp_path, params={"num_models": None}, K=0
    )
    rng = np.random.default_rng(3)
    truth = {}
    for pool, count in (("lds", 12), ("heldout", 6)):
        masks = rng.random((count, 15)) < 0.5
        measured = masks @ rng.standard_normal((15, 4))
        truth[pool] = (masks, measured)
        store.write_h5(
            tmp_path / f"{pool}.h5",
            {
                "masks": masks,
                "train_ids": np.arange(15),
                "val/measured": measured,
                "val/measured_by_seed": measured[None],
                "val/ids": np.arange(4) + 100,
            },
            {"pool": pool},
        )
    out = tmp_path / "lds.json"
    evaluate_lds(
        str(tmp_path / "empirical_influence.h5"),
        str(tmp_path / "lds.h5"),
        str(tmp_path / "heldout.h5"),
        str(out),
        settings=LdsSettings(split="val", bootstrap_resamples=4, bootstrap_seed=0),
    )
    record = json.loads(out.read_text())
    masks, measured = truth["lds"]
    assert record["lds_sign"] == 1 and record["K"] == 0 and record["kind"] == "empirical_influence"
    assert record["lds_curve"][0] == pytest.approx(
        lds.lds(result.scores[0], masks, measured, sign=1)
    )
    assert record["choices"]["heldout"]["lambda"] == 0.0


# --------------------------------------------------------------------------- main-run snapshots


def test_snapshot_steps_and_train_main(tmp_path, tiny_unet_config):
    from diffattr.data import prepare_dataset
    from diffattr.jobs.train import train_main
    from diffattr.models import load_model
    from diffattr.settings import TrainingRecipe, TrainingRuntime, TrainingSettings
    from diffattr.snapshots import snapshot_steps

    assert snapshot_steps(10, 100, 32) == [10, 20, 30]  # 40 steps
    assert snapshot_steps(1, 8, 4) == [1, 1, 2]  # a 2-step run: equal snapshots are fine
    dataset = tmp_path / "dataset.h5"
    prepare_dataset(
        {
            "source": "digits",
            "resolution": 8,
            "channels": 1,
            "train_size": 16,
            "val_size": 2,
            "stratify": False,
        },
        dataset,
    )
    steps = snapshot_steps(2, 16, 4)
    assert steps == [2, 4, 6]
    targets = [str(tmp_path / "models" / "main-checkpoints" / str(p)) for p in (25, 50, 75)]
    training = {"epochs": 2, "batch_size": 4, "lr": 1e-3, "checkpoint_every": 3}
    train_main(
        str(dataset),
        str(tmp_path / "models" / "main"),
        targets,
        snapshot_steps=steps,
        settings=TrainingRecipe(
            model={"unet": tiny_unet_config, "dropout": 0.0},
            scheduler={"num_train_timesteps": 1000},
            training=TrainingSettings(**training, seed=0, device="cpu"),
        ),
        runtime=TrainingRuntime(
            checkpoint_dir=str(tmp_path / "ckpt"), staging_dir=str(tmp_path / "staging")
        ),
    )
    weights = [
        next(load_model(path)[0].parameters()).detach().clone()
        for path in [*targets, tmp_path / "models" / "main"]
    ]
    assert all(not torch.equal(a, b) for a, b in zip(weights, weights[1:], strict=False))
    assert not (tmp_path / "staging").exists()
