"""Cluster resource requests that follow the work a job does.

A job's runtime request (minutes) is ``max(min_runtime, safety × work × unit cost)``, where the
work is counted from the config (optimizer steps, denoiser evaluations, per-sample gradients)
and the unit costs are the ``resources`` section of the config. A site calibrates the unit
costs once from the benchmark files of a few finished jobs (``logs/<experiment>/benchmarks/``).
Memory requests of the CPU-side matrix jobs follow the sizes of the matrices they hold. Retries
multiply both by the attempt number (rules/common.smk).

Local runs ignore ``runtime``; it matters on SLURM, where a too-small request kills the job at
its time limit (training then resumes from its checkpoint on the retry).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from diffattr.data import subset_size
from diffattr.snapshots import run_steps

MB = 1_000_000


def _minutes(config: Mapping[str, Any], seconds: float) -> int:
    res = config["resources"]
    return max(int(res["min_runtime"]), math.ceil(res["safety"] * seconds / 60))


def training_rows(config: Mapping[str, Any], kind: str) -> int:
    """Rows a model of ``kind`` (main, subset, counterfactual) trains on."""
    n = int(config["data"]["train_size"])
    if kind == "main":
        return n
    if kind == "subset":
        return subset_size(n, config["subsets"]["alpha"])
    if kind == "counterfactual":
        from diffattr.counterfactual import resolve_top_k

        block = config["counterfactual"]
        return n - resolve_top_k(n, block.get("top_k"), block["top_fraction"])
    raise ValueError(f"unknown training kind {kind!r}; valid: main, subset, counterfactual")


def training_runtime(config: Mapping[str, Any], kind: str) -> int:
    training = config["training"]
    steps = run_steps(training["epochs"], training_rows(config, kind), training["batch_size"])
    return _minutes(config, steps * config["resources"]["train_step_seconds"])


def query_count(config: Mapping[str, Any], split: str) -> int:
    if split == "val":
        return int(config["data"]["val_size"])
    if split == "gen":
        return int(config["generation"]["num_samples"])
    if split == "train":
        return int(config["data"]["train_size"])
    raise ValueError(f"unknown split {split!r}; valid: train, val, gen")


def measure_runtime(config: Mapping[str, Any], splits: list[str]) -> int:
    """Every query of ``splits`` at every measurement timestep and noise draw."""
    measure = config["measure"]
    evaluations = sum(query_count(config, s) for s in splits) * measure["timesteps"]
    evaluations *= len(measure["noise_seeds"])
    return _minutes(config, evaluations * config["resources"]["forward_seconds"])


def generation_runtime(config: Mapping[str, Any], samples: int) -> int:
    steps = int(config["generation"]["steps"])
    return _minutes(config, samples * steps * config["resources"]["forward_seconds"])


def features_runtime(config: Mapping[str, Any], rows: int, timesteps: int) -> int:
    """``rows`` per-sample gradients at ``timesteps`` timesteps each, then one projection."""
    res = config["resources"]
    seconds = rows * (timesteps * res["gradient_seconds"] + res["projection_seconds"])
    return _minutes(config, seconds)


def train_shard_rows(config: Mapping[str, Any]) -> int:
    return math.ceil(config["data"]["train_size"] / config["features"]["train_shards"])


def score_mem_mb(config: Mapping[str, Any], split: str) -> int:
    """The TRAK kernel and its eigenvectors (min(N, Z)² each, float64), the query features
    and their projection, and one output block, plus the interpreter and libraries."""
    n_train, n_query = query_count(config, "train"), query_count(config, split)
    dim = int(config["features"]["proj_dim"])
    kernel = 3 * min(n_train, dim) ** 2 * 8
    queries = 2 * n_query * max(n_train, dim) * 8
    block = n_query * min(n_train, int(config["scoring"]["chunk_rows"])) * 8
    return 2000 + math.ceil((kernel + queries + block) / MB)


def score_mem_floor_mb(config: Mapping[str, Any], split: str) -> int:
    """What a scoring job holds at least, whatever the form, beyond the interpreter: one
    min(N, Z)² float64 kernel, the projected queries [n, min(N, Z)] (float64) and one float32
    output block [n, chunk]. :func:`score_mem_mb` is the request; this is its lower bound."""
    n_train, n_query = query_count(config, "train"), query_count(config, split)
    rank = min(n_train, int(config["features"]["proj_dim"]))
    block = n_query * min(n_train, int(config["scoring"]["chunk_rows"])) * 4
    return math.floor((rank**2 * 8 + n_query * rank * 8 + block) / MB)


def merge_mem_mb(config: Mapping[str, Any]) -> int:
    """The merged train feature matrix (float32), held once while it is written."""
    size = query_count(config, "train") * int(config["features"]["proj_dim"]) * 4
    return 2000 + math.ceil(2 * size / MB)


def residuals_runtime(config: Mapping[str, Any], timesteps: int) -> int:
    """Minutes for DAS's residual pass: one forward per training image and timestep."""
    evaluations = int(config["data"]["train_size"]) * int(timesteps)
    return _minutes(config, evaluations * config["resources"]["forward_seconds"])
