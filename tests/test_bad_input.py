"""Bad input, one test per case: each fails with an error that names the problem.

The checks live in the library (and in the config schema); these tests call them the way the
workflow and `diffattr attribute` do. Other test files cover the same checks in more variants.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from diffattr import store
from diffattr.cli import main
from diffattr.config import validate_config
from diffattr.data import draw_subset, load_source, prepare_dataset
from diffattr.errors import (
    ConfigError,
    CorruptFileError,
    DataError,
    FeatureMismatchError,
    TrainingError,
)
from diffattr.features import write_features
from diffattr.files import read_scores
from diffattr.scoring import validate_lambdas, write_trak_scores
from tests.conftest import SCHEDULER
from tests.workflow_utils import ROOT, SNAKEMAKE, tiny_config, write_config


def test_unknown_dataset_source():
    with pytest.raises(
        ConfigError, match=r"data\.source = 'cifar11' is not a known source.*digits"
    ):
        load_source({"source": "cifar11", "train_size": 10, "val_size": 5})
    with pytest.raises(ConfigError, match=r"data\.source = 'cifar11' is not valid; choose one of"):
        validate_config(tiny_config(**{"data.source": "cifar11"}))


def test_missing_image_folder(tmp_path):
    cfg = {"source": "imagefolder", "path": str(tmp_path / "nope"), "csv": str(tmp_path / "x.csv")}
    with pytest.raises(
        DataError, match=r"data\.path = .*nope.*image root directory does not exist"
    ):
        load_source({**cfg, "train_size": 4, "val_size": 2})
    code, _, err = _cli(
        "attribute",
        "--model",
        str(tmp_path),
        "--train",
        str(tmp_path / "nope"),
        "--query",
        str(tmp_path),
    )
    assert code == 2 and "--train" in err and "nope': no such image folder or CSV file" in err


def test_missing_csv_column(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "data.csv").write_text("file,label\na.png,cat\n")
    cfg = {
        "source": "imagefolder",
        "path": str(tmp_path / "images"),
        "csv": str(tmp_path / "data.csv"),
    }
    with pytest.raises(
        DataError, match=r"neither the path column 'path'.*columns are \['file', 'label'\]"
    ):
        load_source({**cfg, "train_size": 1, "val_size": 1})
    from diffattr.attribute import list_images

    with pytest.raises(DataError, match=r"no column 'path' \(--path-column\); its columns are"):
        list_images(tmp_path / "data.csv", "path", "train")


def test_truncated_hdf5_file(tmp_path):
    path = tmp_path / "scores.h5"
    store.write_h5(
        path,
        {
            "scores": np.zeros((2, 3, 50), np.float32),
            "lambdas": np.ones(2),
            "train_ids": np.arange(50),
            "test_ids": np.arange(3),
        },
        {},
    )
    path.write_bytes(path.read_bytes()[:1500])
    with pytest.raises(CorruptFileError, match=r"scores\.h5.*truncated or corrupted.*rerun"):
        read_scores(path)


def test_corrupted_hdf5_file(tmp_path):
    path = tmp_path / "features.h5"
    path.write_bytes(b"this is not an HDF5 file" * 10)
    with pytest.raises(CorruptFileError, match=r"features\.h5: not a readable HDF5 file"):
        store.open_h5(path)


def _feature_file(path: Path, seed: int, **changes) -> None:
    attrs = {
        "output_fn": "square",
        "timesteps": [0, 500],
        "noise_seed": 0,
        "noise": "common",
        "noise_batch_size": 0,
        "noise_shard_rows": 0,
        "proj_kind": "normal",
        "proj_seed": 42,
        "proj_dim": 4,
        "model_digest": "aaaa",
        "split": "train",
        **changes,
    }
    matrix = np.random.default_rng(seed).normal(size=(6, 4)).astype(np.float32)
    write_features(path, matrix, np.arange(6), attrs)


@pytest.mark.parametrize(
    "change, named",
    [
        ({"proj_seed": 7}, "proj_seed: 42 vs 7"),
        ({"model_digest": "bbbb"}, "model_digest: 'aaaa' vs 'bbbb'"),
    ],
)
def test_feature_files_from_different_projections_or_models(tmp_path, change, named):
    _feature_file(tmp_path / "train.h5", 0)
    _feature_file(tmp_path / "val.h5", 1, split="val", **change)
    with pytest.raises(FeatureMismatchError, match=named):
        write_trak_scores(tmp_path / "train.h5", tmp_path / "val.h5", tmp_path / "s.h5", [1.0], {})
    assert not (tmp_path / "s.h5").exists()


def test_nan_loss_during_training(tmp_path, tiny_unet_config):
    from diffattr.training import TrainingRun, TrainingSettings, train_model

    images = np.random.default_rng(0).uniform(-1, 1, size=(16, 1, 8, 8)).astype(np.float32)
    images[5] = np.nan
    settings = TrainingSettings(epochs=2, batch_size=8, lr=1e-3, checkpoint_every=1, device="cpu")
    with pytest.raises(TrainingError, match=r"loss became nan at step \d+ of 4.*kept in"):
        run = TrainingRun(tmp_path / "m", tmp_path / "ck")
        train_model(images, settings, tiny_unet_config, SCHEDULER, run)
    assert (tmp_path / "ck" / "state.pt").exists(), "the checkpoint before the bad step is kept"
    assert not (tmp_path / "m").exists()


def test_subset_size_larger_than_train_split(tmp_path):
    pool = len(load_source({"source": "digits", "classes": [3]}).train)
    with pytest.raises(
        DataError, match=rf"data\.train_size = {pool + 1} is larger than the pool.*at most {pool}"
    ):
        prepare_dataset(
            {"source": "digits", "classes": [3], "train_size": pool + 1, "val_size": 2},
            tmp_path / "d.h5",
        )
    with pytest.raises(
        DataError, match=r"subset of 4 rows; a subset must be non-empty and smaller"
    ):
        draw_subset(np.array([0, 1, 0, 1]), 0.9, pool_seed=1, k=0)


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_lambda_not_positive(bad):
    with pytest.raises(ConfigError, match=rf"finite and > 0; invalid value\(s\) \[{bad}\]"):
        validate_lambdas([1.0, bad])
    with pytest.raises(ConfigError, match=r"scoring\.lambdas\.1 = .* out of range; it must be > 0"):
        validate_config(tiny_config(**{"scoring.lambdas": [1.0, bad]}))
    with pytest.raises(SystemExit):
        main(["attribute", "--model", "m", "--train", "t", "--query", "q", "--lambda", str(bad)])


def test_class_filter_matches_nothing():
    with pytest.raises(DataError, match=r"class name 'zebra' is not in the dataset; available"):
        load_source({"source": "digits", "classes": ["zebra"]})
    with pytest.raises(DataError, match=r"integer label 12 is out of range 0\.\.9"):
        load_source({"source": "digits", "classes": [12]})


def test_misspelled_config_key(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'featurs' \(did you mean 'features'\?\)"):
        validate_config({**tiny_config(), "featurs": {"K": [2]}})
    config = tiny_config(**{"training.checkpoint_evry": 4})
    path = write_config(tmp_path, config)
    result = subprocess.run(
        [
            *SNAKEMAKE,
            "--snakefile",
            str(ROOT / "Snakefile"),
            "--directory",
            str(tmp_path),
            "--configfile",
            str(path),
            "-n",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert result.returncode != 0
    assert (
        "unknown key 'checkpoint_evry' (did you mean 'checkpoint_every'?) in training"
        in result.stdout + result.stderr
    )


def _cli(*argv: str) -> tuple[int, str, str]:
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


# --------------------------------------------------------------------------- diffattr attribute
# Each call writes into an --out folder that already holds an earlier result: a refused input
# must leave it as it was.


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A random-weight tiny model, 6 digit PNGs to train on, 1 query and an earlier result."""
    from PIL import Image
    from sklearn.datasets import load_digits

    from diffattr.models import build_scheduler, build_unet, save_model
    from tests.conftest import TINY_UNET

    root = tmp_path_factory.mktemp("attribute")
    torch.manual_seed(0)
    save_model(build_unet(TINY_UNET), build_scheduler(SCHEDULER), root / "model")
    pixels = np.round(load_digits().images * (255 / 16)).astype(np.uint8)
    for name, rows in (("train", range(6)), ("query", [100])):
        (root / name).mkdir()
        for i in rows:
            Image.fromarray(pixels[i]).save(root / name / f"{i}.png")
    (root / "out").mkdir()
    (root / "out" / "scores.h5").write_bytes(b"an earlier result")
    return root


def _attribute(folders, **paths) -> tuple[int, str]:
    given = {"model": "model", "train": "train", "query": "query", **paths}
    argv = ["attribute", "--out", str(folders / "out"), "--K", "2", "--proj-dim", "8"]
    argv += ["--device", "cpu", "--quiet"]
    for flag, value in given.items():
        argv += [f"--{flag}", str(folders / value)]
    code, _, err = _cli(*argv)
    assert (folders / "out" / "scores.h5").read_bytes() == b"an earlier result"
    return code, err


def test_missing_model_folder(folders):
    code, err = _attribute(folders, model="no-such-model")
    assert code == 2 and "no-such-model': no such model folder (expected a DDPMPipeline" in err


def test_corrupt_model_folder(folders):
    """A model folder cut short (bad config JSON, truncated weights) or of another layout."""
    broken = folders / "broken"
    shutil.copytree(folders / "model", broken)
    (broken / "unet" / "config.json").write_text("{not json")
    code, err = _attribute(folders, model="broken")
    assert code == 2 and "broken': the saved model cannot be loaded" in err, err
    assert "expected a complete DDPMPipeline.save_pretrained folder" in err
    from diffattr.models import load_diffusion_model  # what the workflow's jobs load with

    with pytest.raises(CorruptFileError, match=r"broken: the saved model cannot be loaded.*rerun"):
        load_diffusion_model(broken)
    shutil.copy(folders / "model" / "unet" / "config.json", broken / "unet" / "config.json")
    weights = next((broken / "unet").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])
    code, err = _attribute(folders, model="broken")
    assert code == 2 and "cannot be loaded (Unable to load weights" in err, err
    code, err = _attribute(folders, model="train")
    assert code == 2 and "train': no unet/ folder (a DDPMPipeline.save_pretrained layout" in err


def test_query_folder_without_images(folders):
    (folders / "empty").mkdir(exist_ok=True)
    (folders / "empty" / "notes.txt").write_text("no images here")
    code, err = _attribute(folders, query="empty")
    assert code == 2 and "--query '" in err and "the folder holds no image files (.png" in err


def test_file_that_is_not_an_image(folders):
    shutil.copytree(folders / "train", folders / "with-junk")
    (folders / "with-junk" / "zz.png").write_text("not a png")
    code, err = _attribute(folders, train="with-junk")
    assert code == 2 and "zz.png: cannot be read as an image" in err, err


def test_proj_dim_not_positive(folders):
    with pytest.raises(
        ConfigError, match=r"features\.proj_dim = 0 is out of range; it must be >= 1"
    ):
        validate_config(tiny_config(**{"features.proj_dim": 0}))
    with pytest.raises(SystemExit):
        main(["attribute", "--model", "m", "--train", "t", "--query", "q", "--proj-dim", "-3"])


def test_checkpoint_with_another_parameter_count(tiny_unet_config):
    """Features projected for one model's gradient size, taken at a checkpoint of another."""
    from diffattr.features import (
        GradientOptions,
        extract_features,
        num_trainable_parameters,
    )
    from diffattr.models import build_scheduler, build_unet
    from diffattr.projection import make_projector
    from diffattr.queries import QueryRows

    model = build_unet(tiny_unet_config)
    other = build_unet({**tiny_unet_config, "block_out_channels": [8, 24]})
    count, other_count = num_trainable_parameters(model), num_trainable_parameters(other)
    projector = make_projector("normal", count, 4, 42)
    images = np.zeros((2, 1, 8, 8), np.float32)
    with pytest.raises(
        ConfigError, match=rf"built for grad_dim={count} but the model has {other_count} trainable"
    ):
        extract_features(
            other,
            build_scheduler(SCHEDULER),
            QueryRows(images, [0, 1]),
            GradientOptions(output_fn="loss", timesteps=[0], noise_seed=0),
            projector,
        )


# --------------------------------------------------------------------------- config pairs
# Checked by validate_config, which the Snakefile runs before any job: a finished run is safe.


def test_K_that_does_not_divide_T(tmp_path):
    config = tiny_config(**{"features.K": [2, 3]})
    with pytest.raises(
        ConfigError,
        match=r"features\.K = 3 does not divide scheduler\.num_train_timesteps = 1000.*"
        r"valid K: 1, 2, 4, 5, 8, 10",
    ):
        validate_config(config)
    _refused_by_the_workflow(tmp_path, config, "features.K = 3 does not divide")


def test_model_sample_size_differs_from_the_data_resolution():
    config = tiny_config(**{"model.unet.sample_size": 16})
    with pytest.raises(
        ConfigError,
        match=r"model\.unet\.sample_size = 16 differs from data\.resolution = 8.*"
        r"set model\.unet\.sample_size: 8",
    ):
        validate_config(config)
    with pytest.raises(ConfigError, match=r"model\.unet\.in_channels = 3 differs from data\.chan"):
        validate_config(tiny_config(**{"model.unet.in_channels": 3}))


def test_class_filter_naming_a_class_the_source_lacks(tmp_path):
    from PIL import Image

    (tmp_path / "images").mkdir()
    rows = ["path,label"]
    for i, label in enumerate(["cat", "dog"] * 3):
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(tmp_path / "images" / f"{i}.png")
        rows.append(f"{i}.png,{label}")
    (tmp_path / "data.csv").write_text("\n".join(rows) + "\n")
    source = {"source": "imagefolder", "path": str(tmp_path / "images")}
    source |= {"csv": str(tmp_path / "data.csv"), "classes": ["cat", "zebra"]}
    with pytest.raises(DataError, match=r"'zebra' is not in the dataset; available.*cat.*dog"):
        load_source(source)


def _refused_by_the_workflow(tmp_path: Path, config: dict, message: str) -> None:
    """A real (not dry) run with this config fails before any job and keeps what exists."""
    earlier = tmp_path / "results" / "tiny" / "data" / "dataset.h5"
    earlier.parent.mkdir(parents=True)
    earlier.write_bytes(b"an earlier result")
    path = write_config(tmp_path, config)
    command = [*SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path)]
    command += ["--configfile", str(path), "--cores", "1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode != 0 and message in result.stdout + result.stderr
    assert earlier.read_bytes() == b"an earlier result"
    assert not (tmp_path / "logs").exists(), "no job ran"
