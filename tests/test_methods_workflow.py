"""Every attribution method through the workflow: one tiny run scoring all of them, and dry runs
showing that adding a method to a finished run schedules only that method's own jobs."""

from __future__ import annotations

import csv
import math

import pytest

from tests.clip_fixture import build_tiny_clip
from tests.workflow_utils import planned_jobs, snakemake, tiny_config, write_config

pytestmark = pytest.mark.slow

# One method of each family; CLIP runs the real transformers code path on a tiny random CLIP
# saved with save_pretrained (clip.weights), written by the fixture.
# raw_cos and tracin are added to the finished run by the incremental tests.
BASE_METHODS = {
    "trak": {"kind": "trak", "output_fn": "loss"},
    "dtrak": {"kind": "trak", "output_fn": "square"},
    "relative_if": {"kind": "relative_if"},
    "gas": {"kind": "gas"},
    "raw_dot": {"kind": "raw_dot"},
    "clip_cos": {"kind": "clip_cos"},
    "journey_trak": {"kind": "journey_trak"},
    "dtrak_ens2": {"kind": "ensemble_trak", "output_fn": "square", "num_models": 2},
    "emp_infl": {"kind": "empirical_influence"},
    "datamodels": {"kind": "datamodels", "cv_folds": 3},
}
RETRAIN = {"num_subsets": 3, "seed": 3000}
TARGET = "results/tiny/summary.csv"  # the table, without the report pages


def config_with(**extra_methods) -> dict:
    config = tiny_config(
        methods={**BASE_METHODS, **extra_methods},
        **{"subsets.retrain": RETRAIN, "features.train_shards": 1, "clip.weights": "tiny-clip"},
    )
    config.pop("counterfactual", None)
    return config


@pytest.fixture(scope="module")
def methods_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("methods")
    build_tiny_clip(workdir / "tiny-clip")  # relative paths start in the workdir
    configfile = write_config(workdir, config_with())
    result = snakemake(workdir, configfile, "--cores", "2", TARGET)
    return workdir, result


def new_jobs(workdir, **extra_methods) -> dict[str, int]:
    """Jobs a dry run plans after adding methods, without the summary that every change reruns."""
    name = "-".join(extra_methods) + ".yaml"
    configfile = write_config(workdir, config_with(**extra_methods), name)
    jobs = planned_jobs(workdir, configfile, "--", TARGET)  # "--": not one more --quiet value
    assert jobs.pop("summarize") == 1
    return jobs


def test_every_method_is_in_the_lds_table(methods_run):
    workdir, result = methods_run
    assert "skipping method 'clip_cos'" not in result.stderr
    with open(workdir / TARGET) as handle:
        rows = [r for r in csv.DictReader(handle) if r["lambda_choice"] == "heldout"]
    table = {(r["method"], r["split"]): r for r in rows}
    assert {method for method, _ in table} == set(BASE_METHODS)
    for split in ("val", "gen"):  # real CLIP embeddings (transformers), scored like raw_dot
        assert table[("clip_cos", split)]["K"] == "0"
        assert math.isfinite(float(table[("clip_cos", split)]["lds"]))
    assert (workdir / "results" / "tiny" / "features" / "clip" / "train.h5").is_file()
    assert ("journey_trak", "val") not in table and ("journey_trak", "gen") in table
    for method in ("raw_dot", "emp_infl", "datamodels"):
        assert table[(method, "val")]["K"] == "0" and float(table[(method, "val")]["lambda"]) == 0
    assert table[("trak", "val")]["K"] == "2" and float(table[("trak", "val")]["lambda"]) > 0
    assert (workdir / "results" / "tiny" / "models" / "main-checkpoints" / "50").is_dir()


def test_adding_a_baseline_schedules_only_its_scores(methods_run):
    workdir, _ = methods_run
    assert new_jobs(workdir, raw_cos={"kind": "raw_cos"}) == {"score_method": 2, "evaluate_lds": 2}


def test_adding_tracin_reuses_the_checkpoint_features(methods_run):
    workdir, _ = methods_run
    # gas computed the loss features at 25/50/75/100%: tracin needs nothing else
    assert new_jobs(workdir, tracin={"kind": "tracin"}) == {"score_method": 2, "evaluate_lds": 2}
    square = {"kind": "tracin", "output_fn": "square", "checkpoints": [50, 100]}
    assert new_jobs(workdir, tracin_square=square) == {
        "extract_train_features": 1,  # main-50 only: the final model's square features exist
        "merge_train_features": 1,
        "extract_query_features": 2,
        "score_method": 2,
        "evaluate_lds": 2,
    }


def test_a_larger_ensemble_computes_only_the_new_members_features(methods_run):
    workdir, _ = methods_run
    ens3 = {"kind": "ensemble_trak", "output_fn": "square", "num_models": 3}
    assert new_jobs(workdir, dtrak_ens3=ens3) == {
        "extract_train_features": 1,  # retrain-2 only
        "merge_train_features": 1,
        "extract_query_features": 2,
        "score_method": 2,
        "evaluate_lds": 2,
    }


def test_adding_das_schedules_its_features_residuals_and_scores(methods_run):
    workdir, _ = methods_run
    assert new_jobs(workdir, das={"kind": "das", "residual_timesteps": 10}) == {
        "extract_train_features": 1,  # mean_tnorm features: no other method has them
        "merge_train_features": 1,
        "extract_query_features": 2,
        "compute_residuals": 1,  # forward only, its own job and file
        "score_method": 2,
        "evaluate_lds": 2,
    }
    # a DAS ablation without the residual weight and a squared D-TRAK reuse what exists
    assert new_jobs(
        workdir, dtrak_sq={"kind": "trak", "output_fn": "square", "readout": "squared"}
    ) == {
        "score_method": 2,
        "evaluate_lds": 2,
    }


def test_adding_ekfac_schedules_its_factors_and_scores(methods_run):
    pytest.importorskip("kronfluence")
    workdir, _ = methods_run
    ekfac = {"kind": "ekfac", "factor_timesteps": 10, "dampings": [1e-4, 1e-2]}
    assert new_jobs(workdir, ekfac=ekfac) == {
        "fit_ekfac_factors": 1,  # once per model, shared by every K and split
        "score_method": 2,
        "evaluate_lds": 2,
    }
