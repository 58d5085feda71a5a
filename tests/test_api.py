"""diffattr.api.Attributor on a stand-in published checkpoint: a DDPMPipeline.save_pretrained
folder (model_index.json, unet/ with PyTorch .bin weights, scheduler/) as google/ddpm-cifar10-32
has it, built here with random weights."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

from diffattr import features, store
from diffattr.api import (
    AttributionSettings,
    Attributor,
    ImageColumns,
    Runtime,
    as_image_set,
    content_ids,
)
from diffattr.errors import ConfigError, CorruptFileError, DataError, FeatureMismatchError
from diffattr.projection import make_projector
from diffattr.scoring import trak_scores
from tests.conftest import TINY_UNET
from tests.numerics import assert_close_at_row_scale

N_TRAIN = 40
SOURCE = 13  # the training image the first query batch copies
SETTINGS = AttributionSettings(K=4, proj_dim=128)
RUNTIME = Runtime(batch_size=64, device="cpu")


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """A published-layout DDPMPipeline folder (.bin weights, a scheduler config like the hub's)."""
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    folder = tmp_path_factory.mktemp("hub") / "ddpm-tiny-8"
    torch.manual_seed(0)
    scheduler = DDPMScheduler(
        num_train_timesteps=1000, beta_schedule="linear", variance_type="fixed_large"
    )
    DDPMPipeline(unet=UNet2DModel(**TINY_UNET), scheduler=scheduler).save_pretrained(
        folder, safe_serialization=False
    )
    assert (folder / "unet" / "diffusion_pytorch_model.bin").is_file()
    assert json.loads((folder / "model_index.json").read_text())["_class_name"] == "DDPMPipeline"
    return folder


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    return np.round(load_digits().images * (255 / 16)).astype(np.uint8)  # [n, 8, 8]


def test_copy_ranks_first_and_the_second_batch_reuses_the_training_features(
    pipeline, digits, tmp_path
):
    train = digits[:N_TRAIN]
    attributor = Attributor(
        pipeline, train, SETTINGS, runtime=RUNTIME, cache_dir=tmp_path / "cache"
    )
    first = attributor.score(digits[[SOURCE, 500, 900]])
    assert first.scores.shape == (3, N_TRAIN)
    assert first.rank_of(0, SOURCE) == 1, first.scores[0]
    assert attributor.calls == {"train": N_TRAIN, "query": 3}
    assert attributor.cache_path.is_file()

    second = attributor.score(digits[[600, SOURCE + 1]])
    assert attributor.calls == {"train": N_TRAIN, "query": 5}  # no training feature recomputed
    assert second.rank_of(1, SOURCE + 1) == 1

    # a new attributor (a new session) reads the cache file instead of recomputing
    again = Attributor(pipeline, train, SETTINGS, runtime=RUNTIME, cache_dir=tmp_path / "cache")
    third = again.score(digits[[SOURCE, 500, 900]])
    assert again.calls == {"train": 0, "query": 3}
    np.testing.assert_array_equal(third.scores, first.scores)

    # independent computation: the workflow's feature function, the pipeline's projector factory
    from diffusers import DDPMScheduler, UNet2DModel

    unet = UNet2DModel.from_pretrained(pipeline / "unet").eval()
    scheduler = DDPMScheduler.from_pretrained(pipeline / "scheduler")
    images = (train.astype(np.float32)[:, None] / 255 - 0.5) / 0.5
    queries = (digits[[SOURCE, 500, 900]].astype(np.float32)[:, None] / 255 - 0.5) / 0.5
    steps = features.select_timesteps(4, "uniform", 1000)
    projector = make_projector("normal", features.num_trainable_parameters(unet), 128, 42)
    options = features.GradientOptions(output_fn="square", timesteps=steps, noise_seed=0)

    def workflow_features(x, batch_size):
        inputs = features.QueryRows(x, content_ids(x))
        runtime = Runtime(batch_size=batch_size)
        return features.extract_features(unet, scheduler, inputs, options, projector, runtime)

    phi, psi = workflow_features(images, 7), workflow_features(queries, 2)
    assert_close_at_row_scale(attributor.train_features, phi, rtol=1e-5)
    expected = trak_scores(phi, psi, [first.lambda_])[0]
    np.testing.assert_allclose(first.scores, expected, rtol=1e-3, atol=1e-4)


def test_cache_provenance_is_checked(pipeline, digits, tmp_path):
    cache = tmp_path / "cache"
    attributor = Attributor(pipeline, digits[:8], SETTINGS, runtime=RUNTIME, cache_dir=cache)
    attributor.score(digits[[1]])
    # another method gets its own cache file (another key), never the D-TRAK features
    trak_settings = dataclasses.replace(SETTINGS, method="trak")
    trak = Attributor(pipeline, digits[:8], trak_settings, runtime=RUNTIME, cache_dir=cache)
    assert trak.cache_path != attributor.cache_path
    # a cache file whose provenance was altered is refused, naming the key
    with store.h5_writer(trak.cache_path, {**trak._train_attrs(), "noise_seed": 5}) as handle:
        handle.create_dataset("features", data=np.zeros((8, 128), np.float32))
        handle.create_dataset("ids", data=trak.train.ids)
    with pytest.raises(FeatureMismatchError, match="noise_seed"):
        trak.score(digits[[1]])


def test_training_sets_of_every_kind_give_the_same_images(pipeline, digits, tmp_path):
    datasets = pytest.importorskip("datasets")
    pixels = digits[:6]
    folder = tmp_path / "train"
    folder.mkdir()
    for i, image in enumerate(pixels):
        Image.fromarray(image).save(folder / f"{i}.png")
    csv_path = tmp_path / "train.csv"
    csv_path.write_text("path\n" + "".join(f"train/{i}.png\n" for i in range(6)))
    dataset = datasets.Dataset.from_dict(
        {"image": [Image.fromarray(p) for p in pixels], "label": list(range(6))}
    ).cast_column("image", datasets.Image())
    model_space = (pixels.astype(np.float32)[:, None] / 255 - 0.5) / 0.5
    sources = {
        "folder": folder,
        "csv": csv_path,
        "paths": sorted(folder.glob("*.png")),
        "uint8 [n,H,W]": pixels,
        "uint8 [n,H,W,1]": pixels[..., None],
        "float [0,1]": pixels.astype(np.float32) / 255,
        "model space": model_space,
        "tensor": torch.from_numpy(model_space),
        "PIL": [Image.fromarray(p) for p in pixels],
        "datasets": dataset,
    }
    for name, source in sources.items():
        got = as_image_set(source, 8, 1)
        np.testing.assert_allclose(got.images, model_space, atol=1e-6, err_msg=name)
        np.testing.assert_array_equal(got.ids, content_ids(model_space), err_msg=name)
    with pytest.raises(DataError, match="unsupported image source"):
        as_image_set(42, 8, 1)


def test_checkpoints_that_are_not_pixel_ddpms_are_refused(pipeline, tmp_path):
    with pytest.raises(CorruptFileError, match="no such model folder"):
        Attributor(tmp_path / "missing", np.zeros((2, 8, 8), np.uint8), runtime=RUNTIME)
    other = tmp_path / "sd"
    other.mkdir()
    (other / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(ConfigError, match="StableDiffusionPipeline"):
        Attributor(other, np.zeros((2, 8, 8), np.uint8), runtime=RUNTIME)


@pytest.mark.parametrize(
    ("name", "value", "valid"),
    [
        ("method", "x", "'dtrak', 'trak'"),
        ("K", 0, "integer >= 1"),
        ("K", 10.0, "integer"),
        ("t_strategy", "random", "'uniform'"),
        ("proj_kind", "gaussian", "'normal'"),
        ("proj_dim", 0, "integer >= 1"),
        ("proj_seed", "42", "integer"),
        ("noise_seed", None, "integer"),
    ],
)
def test_attribution_settings_refuse_a_bad_value_by_name(name, value, valid):
    with pytest.raises(ConfigError) as caught:
        AttributionSettings(**{name: value})
    assert f"AttributionSettings.{name} = {value!r}" in str(caught.value)
    assert valid in str(caught.value)


def test_bad_lambdas_columns_and_the_old_keywords_are_refused(pipeline):
    with pytest.raises(ConfigError, match="finite and > 0"):
        AttributionSettings(lambda_=-1.0)
    with pytest.raises(ConfigError, match="ImageColumns.path = ''"):
        ImageColumns(path="")
    assert ImageColumns(image="img").image == "img"
    with pytest.raises(TypeError, match="unexpected keyword argument 'K'"):
        Attributor(pipeline, np.zeros((2, 8, 8), np.uint8), K=4)  # type: ignore[call-arg]


def test_structured_projection_is_calibrated_on_the_first_training_images(
    pipeline, digits, monkeypatch
):
    """Where the dense matrix would not fit, ``auto`` takes the structured projection with the
    default ``energy`` split, calibrated on the first 16 training images (content-id noise)."""
    from diffusers import DDPMScheduler, UNet2DModel

    from diffattr import projection
    from diffattr.calibration import calibration_energies
    from diffattr.projection_structured import calibration_shares, layout_groups

    monkeypatch.setattr(projection, "DEFAULT_MAX_CACHE_BYTES", 1)
    train = digits[:N_TRAIN]
    attributor = Attributor(pipeline, train, SETTINGS, runtime=RUNTIME)
    layout = attributor.projector.layout
    assert attributor.projector.projection == "structured" and layout.allocation == "energy"

    unet = UNet2DModel.from_pretrained(pipeline / "unet").eval()
    scheduler = DDPMScheduler.from_pretrained(pipeline / "scheduler")
    images = (train[:16].astype(np.float32)[:, None] / 255 - 0.5) / 0.5
    rows = features.QueryRows(images, content_ids(images))
    groups = layout_groups(unet)
    energies = calibration_energies(unet, scheduler, rows, "square", groups, 42)
    assert list(layout.energies) == calibration_shares(energies)
    scores = attributor.score(digits[[SOURCE]])
    assert scores.rank_of(0, SOURCE) <= 3, scores.scores[0]
