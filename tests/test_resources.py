"""Cluster requests follow the work of each job (diffattr.resources)."""

import copy
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from diffattr import resources as work
from diffattr.config import validate_config
from tests.workflow_utils import ROOT, tiny_config


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


def test_score_memory_grows_with_queries_and_training_rows(cifar2):
    more_queries = changed(cifar2, "data", val_size=4 * cifar2["data"]["val_size"])
    assert work.score_mem_mb(more_queries, "val") > work.score_mem_mb(cifar2, "val")
    assert work.score_mem_floor_mb(cifar2, "val") < work.score_mem_mb(cifar2, "val")
    # Z = 32768 > N = 5000: the dual form's N x N Gram grows with N, not with Z
    more_rows = changed(cifar2, "data", train_size=2 * cifar2["data"]["train_size"])
    assert work.score_mem_floor_mb(more_rows, "val") > work.score_mem_floor_mb(cifar2, "val")
    bigger = changed(cifar2, "features", proj_dim=4 * cifar2["features"]["proj_dim"])
    assert work.score_mem_floor_mb(bigger, "val") == work.score_mem_floor_mb(cifar2, "val")


# The child writes one score file and reports its resident memory before the call and its peak.
_SCORE_CHILD = """
import json, sys
import numpy as np
from diffattr.features import write_features
from diffattr.scoring import TrakOptions, write_trak_scores
from diffattr.store import FEATURE_CHECK_KEYS

n_train, n_query, dim, chunk, folder = json.loads(sys.argv[1])
attrs = {**{key: "same" for key in FEATURE_CHECK_KEYS}, "proj_dim": dim}
rng = np.random.default_rng(0)
for name, rows in (("train", n_train), ("val", n_query)):
    matrix = rng.normal(size=(rows, dim)).astype(np.float32)
    write_features(f"{folder}/{name}.h5", matrix, np.arange(rows), {**attrs, "split": name})
    del matrix

def status(key):
    line = next(l for l in open("/proc/self/status") if l.startswith(key + ":"))
    return int(line.split()[1]) * 1024 / 1e6

before = status("VmRSS")
write_trak_scores(f"{folder}/train.h5", f"{folder}/val.h5", f"{folder}/s.h5", [1.0], {},
                  TrakOptions(chunk_rows=chunk))
print(json.dumps({"before": before, "peak": status("VmHWM")}))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_score_job_peak_memory_lies_between_the_floor_and_the_request(tmp_path):
    """A scoring job whose output block dominates (n = 3000 queries x 4096 training rows per
    block, float32: 49 MB), measured in a child process."""
    config = tiny_config(**{"data.train_size": 8192, "data.val_size": 3000})
    config = validate_config({**config, "features": {**config["features"], "proj_dim": 64}})
    sizes = [8192, 3000, 64, config["scoring"]["chunk_rows"]]
    result = subprocess.run(
        [sys.executable, "-c", _SCORE_CHILD, json.dumps([*sizes, str(tmp_path)])],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    memory = json.loads(result.stdout.strip().splitlines()[-1])
    floor, request = work.score_mem_floor_mb(config, "val"), work.score_mem_mb(config, "val")
    assert floor > 40, floor  # the floor is not trivially met
    assert memory["peak"] - memory["before"] >= floor, (memory, floor)
    assert memory["peak"] <= request, (memory, request)


def test_scoring_runtime_counts_the_factorisation_flops(cifar2):
    """CIFAR-2 is dual (N = 5000 < Z): Gram N²Z, cross products 2nNZ, eigendecomposition 9N³."""
    n, z, q = 5000, cifar2["features"]["proj_dim"], 1000
    flops = n * n * z + 2 * q * n * z + 9 * n**3
    assert work.score_flops(cifar2, "val", "factor") == flops
    seconds = flops / (cifar2["resources"]["scoring_gflops"] * 1e9 * 2)
    res = cifar2["resources"]
    expected = max(res["min_runtime"], math.ceil(res["safety"] * seconds / 60))
    assert work.score_runtime(cifar2, "val", "factor", threads=2) == expected
    # one score matrix at one λ: 2·n·N·N (dual: no ΦV); the whole grid one per λ
    grid = len(cifar2["scoring"]["lambdas"])
    assert work.score_flops(cifar2, "val", "grid") == grid * work.score_flops(
        cifar2, "val", "select"
    )


def test_unknown_names_are_refused(cifar2):
    with pytest.raises(ValueError, match="valid: main, subset, counterfactual"):
        work.training_rows(cifar2, "retrain")
    with pytest.raises(ValueError, match="valid: train, val, gen"):
        work.query_count(cifar2, "test")


def test_feature_requests_follow_the_projection_that_runs(cifar2):
    res = cifar2["resources"]
    rows, K = 1000, 100
    gradient = rows * K * res["gradient_seconds"]

    def minutes(seconds):
        return max(res["min_runtime"], math.ceil(res["safety"] * seconds / 60))

    dense = changed(cifar2, "features", projection="dense")
    structured = changed(cifar2, "features", projection="structured")
    unmixed = changed(structured, "features", structured_mixing=1)
    assert work.features_runtime(dense, rows, K) == minutes(
        gradient + rows * res["projection_seconds"]
    )
    assert work.features_runtime(unmixed, rows, K) == minutes(work.STRUCTURED_OVERHEAD * gradient)
    # the default mixing (16, hadamard): larger blocks, then 2^19 · 19-level butterflies per row
    butterflies = rows * 2**19 * 20 * work.HADAMARD_OP_SECONDS
    assert work.features_runtime(structured, rows, K) == minutes(
        work.STRUCTURED_OVERHEAD * work.MIXED_BLOCKS_FACTOR * gradient + butterflies
    )
    # auto is resolved only when the job counts the model's parameters: the larger request
    auto = work.features_runtime(cifar2, rows, K)
    assert auto == max(
        work.features_runtime(dense, rows, K), work.features_runtime(structured, rows, K)
    )
    # the structured cost has no per-row projection term: it vanishes with the timesteps
    no_projection = changed(structured, "resources", projection_seconds=1e6)
    assert work.features_runtime(no_projection, rows, K) == work.features_runtime(
        structured, rows, K
    )


def test_structured_mixing_adds_its_matrix_to_the_feature_request(cifar2):
    """m·Z² entries generated once per job and multiplied by every row: at the CIFAR-2 shape
    (Z = 32768) and m = 4, 1000 rows add about 8 minutes of one CPU thread."""
    unmixed = changed(cifar2, "features", structured_mixing=1)
    plain = work.features_seconds(unmixed, 1000, 10)["structured"]
    gaussian4 = changed(cifar2, "features", structured_mixing=4, structured_mixer="gaussian")
    mixed = work.features_seconds(gaussian4, 1000, 10)
    blocks = (
        (work.MIXED_BLOCKS_FACTOR - 1)
        * work.STRUCTURED_OVERHEAD
        * 1000
        * 10
        * (cifar2["resources"]["gradient_seconds"])
    )
    added = mixed["structured"] - plain - blocks
    assert added == pytest.approx(4 * 32768**2 * (1 / 10e6 + 1000 * 0.91 / (1000 * 2048 * 32768)))
    assert 400 < added < 600
    assert mixed["dense"] == work.features_seconds(unmixed, 1000, 10)["dense"]


def test_the_hadamard_mixer_costs_its_butterflies_not_a_matrix(cifar2):
    """m = 16 at Z = 32768: 1000 rows × 2¹⁹ × 20 butterflies, under a minute, where the
    gaussian mixer's [16·Z, Z] matrix would cost half an hour."""
    mixing = {"structured_mixing": 16}
    gaussian = work.features_seconds(
        changed(cifar2, "features", structured_mixer="gaussian", **mixing), 1000, 10
    )
    hadamard = work.features_seconds(cifar2, 1000, 10)  # the default: m = 16, hadamard
    blocks = (
        work.MIXED_BLOCKS_FACTOR
        * work.STRUCTURED_OVERHEAD
        * 1000
        * 10
        * (cifar2["resources"]["gradient_seconds"])
    )
    plain = blocks + (
        work.features_seconds(changed(cifar2, "features", structured_mixing=1), 1000, 10)[
            "structured"
        ]
        - work.STRUCTURED_OVERHEAD * 1000 * 10 * cifar2["resources"]["gradient_seconds"]
    )  # the calibration, if any
    added = hadamard["structured"] - plain
    assert added == pytest.approx(1000 * 2**19 * 20 * 5e-9)
    assert gaussian["structured"] - plain > 30 * added
