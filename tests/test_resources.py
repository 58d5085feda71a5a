"""Cluster requests follow the work of each job (diffattr.resources)."""

import copy
import math

import pytest
import yaml

from diffattr import resources as work
from diffattr.config import validate_config
from tests.workflow_utils import ROOT


@pytest.fixture
def cifar2():
    with open(ROOT / "experiments" / "cifar2.yaml") as handle:
        return validate_config(yaml.safe_load(handle))


def changed(config, section, **values):
    config = copy.deepcopy(config)
    config[section].update(values)
    return config


def test_training_runtime_is_steps_times_cost(cifar2):
    res = cifar2["resources"]
    steps = cifar2["training"]["epochs"] * math.ceil(2500 / cifar2["training"]["batch_size"])
    expected = math.ceil(res["safety"] * steps * res["train_step_seconds"] / 60)
    assert work.training_runtime(cifar2, "subset") == expected
    assert work.training_rows(cifar2, "subset") == 2500


def test_runtime_grows_with_the_work(cifar2):
    longer = changed(cifar2, "training", epochs=2 * cifar2["training"]["epochs"])
    assert work.training_runtime(longer, "main") == pytest.approx(
        2 * work.training_runtime(cifar2, "main"), abs=1
    )
    assert work.training_runtime(cifar2, "subset") < work.training_runtime(cifar2, "main")
    more_noise = changed(cifar2, "measure", noise_seeds=[0, 1, 2, 3, 4, 5])
    assert work.measure_runtime(more_noise, ["val", "gen"]) == pytest.approx(
        2 * work.measure_runtime(cifar2, ["val", "gen"]), abs=1
    )
    assert work.features_runtime(cifar2, 5000, 100) > work.features_runtime(cifar2, 5000, 10)


def test_small_jobs_get_the_minimum_runtime(cifar2):
    assert work.features_runtime(cifar2, 1, 1) == cifar2["resources"]["min_runtime"]
    generous = changed(cifar2, "resources", safety=4.0)
    assert work.measure_runtime(generous, ["val"]) == pytest.approx(
        2 * work.measure_runtime(cifar2, ["val"]), abs=1
    )


def test_counterfactual_models_train_without_the_removed_rows(cifar2):
    config = changed(cifar2, "counterfactual", top_k=1000)
    assert work.training_rows(config, "counterfactual") == 4000


def test_score_memory_holds_kernel_and_queries(cifar2):
    n, z, q = 5000, cifar2["features"]["proj_dim"], 1000
    chunk = min(n, cifar2["scoring"]["chunk_rows"])
    direct = 2000 + math.ceil(
        (3 * min(n, z) ** 2 * 8 + 2 * q * max(n, z) * 8 + q * chunk * 8 + chunk * z * 12) / 1e6
    )
    assert work.score_mem_mb(cifar2, "val") == direct
    assert work.merge_mem_mb(cifar2) == 2000 + math.ceil(2 * n * z * 4 / 1e6)


def test_scoring_runtime_counts_the_factorisation_flops(cifar2):
    """CIFAR-2 is dual (N = 5000 < Z): Gram N²Z, cross products 2nNZ, eigendecomposition 9N³."""
    n, z, q = 5000, cifar2["features"]["proj_dim"], 1000
    flops = n * n * z + 2 * q * n * z + 9 * n**3
    assert work.score_flops(cifar2, "val", "factor") == flops
    seconds = flops / (cifar2["resources"]["scoring_gflops"] * 1e9 * 2)
    res = cifar2["resources"]
    expected = max(res["min_runtime"], math.ceil(res["safety"] * seconds / 60))
    assert work.score_runtime(cifar2, "val", "factor", threads=2) == expected
    # one score matrix at one λ: 2·n·N·N (dual: no ΦV); the whole grid 27 of them
    assert work.score_flops(cifar2, "val", "grid") == 27 * work.score_flops(cifar2, "val", "select")


def test_unknown_names_are_refused(cifar2):
    with pytest.raises(ValueError, match="valid: main, subset, counterfactual"):
        work.training_rows(cifar2, "retrain")
    with pytest.raises(ValueError, match="valid: train, val, gen"):
        work.query_count(cifar2, "test")
