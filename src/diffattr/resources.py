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
from diffattr.plan import counterfactual_top_k
from diffattr.schema import schema_default
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
        return n - counterfactual_top_k(config)
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


#: Cost of one (sample, timestep) of the structured projection's features relative to one
#: plain batched forward and backward pass of the same model (``gradient_seconds``): measured
#: 0.65-1.54 at the CIFAR-2 UNet's size, Z = 32768, on a CPU (``make bench``,
#: ``paper_features_vs_plain``; benchmarks/README.md), so the request takes the upper end.
STRUCTURED_OVERHEAD = 1.6


#: The structured projection's mixing (``features.structured_mixing``) per entry of its
#: [m·Z, Z] matrix, measured on one CPU thread: generating it (10 M counter normals/s) and,
#: per row, multiplying by it (0.91 s for 1000 rows × a 2048 × 32768 block).
MIXING_ENTRY_SECONDS = 1 / 10e6
MIXING_FLOP_SECONDS = 0.91 / (1000 * 2048 * 32768)
#: With mixing the blocks have m·Z dimensions, so the per-layer products grow (P_inᵀ a above all):
#: at the CIFAR-2 UNet's size, Z = 32768, m = 16 took 26.2 s where m = 1 took 19.8 s (m = 4:
#: 19.7 s; ``make bench``, paper_features against paper_features_unmixed), so m > 1 adds 35 %.
MIXED_BLOCKS_FACTOR = 1.35
#: The ``hadamard`` mixer per row and butterfly (N₂·log₂ N₂ per row, N₂ = m·Z padded to a power
#: of two), measured on one CPU thread: 12.4 s for 256 rows at m·Z = 16 · 32768.
HADAMARD_OP_SECONDS = 5e-9


def _feature_setting(config: Mapping[str, Any], key: str) -> Any:
    """``features.<key>`` of ``config``, or the schema's default where it is unset."""
    features = config["features"]
    return features[key] if key in features else schema_default(f"features.{key}")


def features_seconds(config: Mapping[str, Any], rows: int, timesteps: int) -> dict[str, float]:
    """Seconds of ``rows`` samples' features at ``timesteps`` timesteps, per projection:

    * ``dense`` / ``dense_counter``: a per-sample gradient at each timestep
      (``gradient_seconds``) and one projection of the mean gradient per row
      (``projection_seconds``);
    * ``structured``: the layers' inputs and output gradients projected at each timestep, no
      per-sample gradient and no [P, Z] matrix: :data:`STRUCTURED_OVERHEAD` ×
      ``gradient_seconds`` per (sample, timestep) (× :data:`MIXED_BLOCKS_FACTOR` with mixing,
      plus the mixer); the ``energy`` split adds its calibration, per-sample gradients of
      CALIBRATION_ROWS rows at CALIBRATION_K timesteps.
    """
    from diffattr.calibration import CALIBRATED_ALLOCATIONS, CALIBRATION_K, CALIBRATION_ROWS

    res = config["resources"]
    gradient = rows * timesteps * res["gradient_seconds"]
    dense = gradient + rows * res["projection_seconds"]
    mixing = int(_feature_setting(config, "structured_mixing"))
    structured = STRUCTURED_OVERHEAD * gradient * (MIXED_BLOCKS_FACTOR if mixing > 1 else 1.0)
    if _feature_setting(config, "structured_allocation") in CALIBRATED_ALLOCATIONS:
        structured += CALIBRATION_ROWS * CALIBRATION_K * res["gradient_seconds"]
    if mixing > 1:
        dim = int(config["features"]["proj_dim"])
        if _feature_setting(config, "structured_mixer") == "hadamard":
            padded = 1 << (mixing * dim - 1).bit_length()
            structured += rows * padded * padded.bit_length() * HADAMARD_OP_SECONDS
        else:
            structured += mixing * dim * dim * (MIXING_ENTRY_SECONDS + rows * MIXING_FLOP_SECONDS)
    return {"dense": dense, "dense_counter": dense, "structured": structured}


def features_runtime(config: Mapping[str, Any], rows: int, timesteps: int) -> int:
    """The runtime request of a feature job: :func:`features_seconds` of the configured
    ``features.projection``. ``auto`` becomes dense or structured only when the job has built
    the model and counted its parameters, so it requests the larger of the two."""
    seconds = features_seconds(config, rows, timesteps)
    projection = config["features"].get("projection", "auto")
    if projection == "auto":
        return _minutes(config, max(seconds["dense"], seconds["structured"]))
    return _minutes(config, seconds[projection])


def train_shard_rows(config: Mapping[str, Any]) -> int:
    return math.ceil(config["data"]["train_size"] / config["features"]["train_shards"])


def score_mem_mb(config: Mapping[str, Any], split: str) -> int:
    """The TRAK kernel and its eigenvectors (min(N, Z)² each, float64; with syevd's workspace
    3·min(N, Z)² in all), the query features and their projection, one chunk of training rows
    and one output block, plus the interpreter and libraries."""
    n_train, n_query = query_count(config, "train"), query_count(config, split)
    dim = int(config["features"]["proj_dim"])
    kernel = 3 * min(n_train, dim) ** 2 * 8
    queries = 2 * n_query * max(n_train, dim) * 8
    chunk = min(n_train, int(config["scoring"]["chunk_rows"]))
    block = n_query * chunk * 8
    rows = chunk * dim * 12  # one chunk of training rows, read as float32, used as float64
    return 2000 + math.ceil((kernel + queries + block + rows) / MB)


def select_mem_mb(config: Mapping[str, Any], split: str, written: int = 1) -> int:
    """Score matrices from a spectra file: the query factor [n, r] and its weighted copy
    (float64), one block of the training factor and the [written, n, block] output block
    (float64 and float32), with r = min(N, Z) and ``written`` λ values."""
    n_train, n_query = query_count(config, "train"), query_count(config, split)
    rank = min(n_train, int(config["features"]["proj_dim"]))
    block = min(n_train, int(config["scoring"]["chunk_rows"]), 4096)
    factors = 2 * n_query * rank * 8 + 2 * block * rank * 8
    output = (written + 2) * n_query * block * 12
    return 2000 + math.ceil((factors + output) / MB)


#: Floating-point operations of a symmetric eigendecomposition with eigenvectors (syevd), per r³.
EIGH_FLOPS = 9.0
#: Threads of the scoring jobs (rules/scores.smk).
SCORE_THREADS = 2


def score_flops(config: Mapping[str, Any], split: str, stage: str, relative: bool = False) -> float:
    """Floating-point operations of one scoring job (``stage``: ``factor`` the spectra file,
    ``lds`` the grid's LDS curves, ``select`` the score file at one λ, ``grid`` at every λ).

    primal (Z <= N): kernel N·Z², eigendecomposition 9·Z³, query projection 2·n·Z²; the LDS
    needs (MΦ)V (S·N·Z + S·Z²) and S·Z·n per λ, relative IF also ΦV (2·N·Z²) and S·N·Z per λ;
    a score matrix is ΦV plus 2·n·Z·N per λ. dual (N < Z): Gram and cross products N²·Z +
    2·n·N·Z, eigendecomposition 9·N³, 2·n·N² for the query factor; the rest with r = N.
    """
    n_train, n_query = query_count(config, "train"), query_count(config, split)
    dim = int(config["features"]["proj_dim"])
    lambdas = len(config["scoring"]["lambdas"])
    subsets = max(int(config["subsets"][pool]["num_subsets"]) for pool in ("lds", "heldout"))
    primal = dim <= n_train
    rank = dim if primal else n_train
    if stage == "factor":
        if primal:
            return n_train * dim**2 + EIGH_FLOPS * dim**3 + 2 * n_query * dim**2
        return n_train**2 * dim + 2 * n_query * n_train * dim + EIGH_FLOPS * n_train**3
    right = 2 * n_train * dim**2 if primal else 0.0  # ΦV, block by block
    if stage == "lds":
        masked = subsets * n_train * dim + subsets * rank**2
        if relative:
            masked = right + lambdas * subsets * n_train * rank
        return 2 * (masked + lambdas * subsets * rank * n_query)
    written = {"select": 1, "grid": lambdas}.get(stage)
    if written is None:
        raise ValueError(f"unknown scoring stage {stage!r}; valid: factor, lds, select, grid")
    return right + written * 2 * n_query * rank * n_train


def score_runtime(
    config: Mapping[str, Any], split: str, stage: str, threads: int = 1, relative: bool = False
) -> int:
    """Runtime request (minutes) of a scoring job from :func:`score_flops`."""
    rate = float(config["resources"]["scoring_gflops"]) * 1e9 * max(1, threads)
    return _minutes(config, score_flops(config, split, stage, relative) / rate)


def lds_mem_mb(config: Mapping[str, Any], split: str) -> int:
    """Evaluating the λ grid from a spectra file (diffattr.spectral): the query factor [n, r]
    and, in the primal form (Z <= N), the eigenvectors [Z, Z] (float64), one block of training
    rows and the masks of the larger pool; relative IF adds [L, S, r] masked factors."""
    n_train, n_query = query_count(config, "train"), query_count(config, split)
    dim = int(config["features"]["proj_dim"])
    rank = min(n_train, dim)
    subsets = max(int(config["subsets"][pool]["num_subsets"]) for pool in ("lds", "heldout"))
    primal = dim <= n_train
    basis = dim * dim * 8 if primal else 0
    lambdas = len(config["scoring"]["lambdas"])
    block = 4096 * (2 * dim if primal else rank) * 8
    matrices = basis + 2 * n_query * rank * 8 + block
    matrices += subsets * n_train * 8 + lambdas * subsets * (rank + n_query) * 8
    return 2000 + math.ceil(matrices / MB)


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
