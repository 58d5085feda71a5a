"""Bad input, one test per case: each fails with an error that names the problem.

The checks live in the library (and in the config schema); these tests call them the way the
workflow and `diffattr attribute` do. Other test files cover the same checks in more variants.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

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
from diffattr.scoring import read_scores, validate_lambdas, write_trak_scores
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
    from diffattr.training import TrainingSettings, train_model

    images = np.random.default_rng(0).uniform(-1, 1, size=(16, 1, 8, 8)).astype(np.float32)
    images[5] = np.nan
    settings = TrainingSettings(epochs=2, batch_size=8, lr=1e-3, checkpoint_every=1, device="cpu")
    with pytest.raises(TrainingError, match=r"loss became nan at step \d+ of 4.*kept in"):
        train_model(images, settings, tiny_unet_config, SCHEDULER, tmp_path / "m", tmp_path / "ck")
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
