"""Config validation, paths and wildcard helpers shared by every rule file."""

import re
import sys

from diffattr.config import schema_default, validate_config
from diffattr.methods import job_params, method_needs, method_targets, runnable_methods
from diffattr.methods import method_splits
from diffattr.noise import NOISE_TAG_PATTERN, split_noise_tag
from diffattr.snapshots import SNAPSHOT_PERCENTS, snapshot_steps
from diffattr.base_model import check_base_model
from diffattr import resources as work
from diffattr.job_server import JobServer

config.update(validate_config(config))
check_base_model(config)  # an sd_lora base model must be on disk before any job runs

EXPERIMENT = config["experiment"]
RESULTS = f"results/{EXPERIMENT}"
LOGS = f"logs/{EXPERIMENT}"
JOB_SERVER = JobServer()
BENCHMARKS = f"logs/{EXPERIMENT}/benchmarks"
CHECKPOINTS = f".checkpoints/{EXPERIMENT}"

POOLS = ["lds", "heldout", *(["retrain"] if config["subsets"].get("retrain") else [])]
QUERY_SPLITS = config["lds"]["splits"]
MEASURED_SPLITS = sorted(set(QUERY_SPLITS))
METHODS, SKIPPED_METHODS = runnable_methods(config)
KS = config["features"]["K"]
GPU = 0 if config["device"] == "cpu" else 1
# Implementation version of each expensive step. Bump one in the commit that changes the step's
# algorithm (in scripts/ or src/): its jobs and their dependents rerun (params trigger), nothing
# else. A checkout that only changes file times reruns nothing under the slurm profile.
IMPL_VERSION = {"training": 1, "generation": 1, "measurement": 1, "features": 3}
# Software of every job under `--sdm conda` (ignored otherwise: jobs use the running Python).
CONDA_ENV = "../envs/cpu.yaml" if config["device"] == "cpu" else "../envs/cuda.yaml"


wildcard_constraints:
    pool="|".join(POOLS),
    k=r"\d+",
    seed=r"\d+",
    split="train|val|gen",
    query="val|gen",
    shard=r"\d+",
    K=r"\d+",
    fn=r"[a-z0-9_]+",
    noise=NOISE_TAG_PATTERN,
    method="|".join(re.escape(name) for name in METHODS) or "^$",
    ckpt=r"main|main-\d+|retrain-\d+",


def pool_config(pool):
    return config["subsets"][pool]


def pool_subsets(pool):
    return range(pool_config(pool)["num_subsets"])


def pool_seeds(pool):
    return pool_config(pool)["train_seeds"]


def training_params(wildcards):
    """Training hyperparameters; the same for the main and every subset model. Without EMA
    the key is left out, so that configs from before it existed rerun nothing."""
    return {
        k: v for k, v in config["training"].items() if not (k == "ema_decay" and v == 0)
    }


def measure_output_param():
    """``output`` only when measure.output is not the default (loss), so that results measured
    before the key existed rerun nothing (the job measures the default without it)."""
    output = config["measure"]["output"]
    return {} if output == schema_default("measure.output") else {"output": output}


def model_params(wildcards):
    return config["model"]


def scheduler_params(wildcards):
    return config["scheduler"]


def subset_model_seed(wildcards):
    return int(wildcards.seed)


def subset_pool_seed(wildcards):
    return pool_config(wildcards.pool)["seed"]


def subset_path(pool, k):
    return f"{RESULTS}/subsets/{pool}/{k}.h5"


def model_dir(pool, k, seed):
    return f"{RESULTS}/models/{pool}/{k}/seed{seed}"


def measured_path(pool, k, seed):
    return f"{RESULTS}/measured/{pool}/{k}/seed{seed}.h5"


for _name, _reason in SKIPPED_METHODS.items():
    print(f"diffattr: skipping method {_name!r}: {_reason}", file=sys.stderr)


def lds_targets():
    """(method, K, split) of every score file and LDS record; K = 0 for methods without K."""
    return method_targets(config, METHODS)


# Paths of the files a method may read (diffattr.methods.base.NEED_FILES).
METHOD_INPUT_PATHS = {
    "features": f"{RESULTS}/features/{{ckpt}}/{{fn}}/{{noise}}/K{{K}}/{{split}}.h5",
    "trajectory_features": f"{RESULTS}/features/main/{{fn}}/trajectory/gen.h5",
    "clip_embeddings": f"{RESULTS}/features/clip/{{split}}.h5",
    "dataset": f"{RESULTS}/data/dataset.h5",
    "samples": f"{RESULTS}/samples/gen.h5",
    "main_model": f"{RESULTS}/models/main",
    "groundtruth": f"{RESULTS}/groundtruth/{{pool}}.h5",
    "residuals": f"{RESULTS}/residuals/main/{{noise}}/S{{S}}.h5",
    "ekfac_factors": f"{RESULTS}/ekfac/main/{{noise}}/T{{T}}-{{strategy}}",
}


def method_inputs(wildcards):
    """Named input files of one scoring job, as the method's kind declares them."""
    needs = method_needs(config, wildcards.method, int(wildcards.K), wildcards.query)
    return {
        name: [METHOD_INPUT_PATHS[need.file].format(**need.fields) for need in items]
        for name, items in needs.items()
    }


def method_uses_lambdas(name):
    from diffattr.methods import get_method

    return get_method(METHODS[name]["kind"]).uses_lambdas


def method_writes_spectra(name):
    from diffattr.methods import get_method

    return get_method(METHODS[name]["kind"]).writes_spectra(METHODS[name])


# Methods with a ridge λ factorised once: factor_method, then select_scores (rules/scores.smk).
# Other λ methods (squared readout, DAS) score the whole grid in score_method.
LAMBDA_METHODS = [
    name
    for name in METHODS
    if method_uses_lambdas(name) and method_writes_spectra(name)
]


def method_pattern(names, invert=False):
    """Wildcard constraint matching the runnable methods in ``names`` (or not in, ``invert``)."""
    chosen = [name for name in METHODS if (name in names) != invert]
    return "|".join(re.escape(name) for name in chosen) or "^$"


def grid_path(method, K, query):
    """What the λ grid of one (method, K, split) is evaluated from: its spectra file (methods
    with a ridge λ) or its score file."""
    folder = "spectra" if method in LAMBDA_METHODS else "scores"
    return f"{RESULTS}/{folder}/{method}/K{K}/{query}.h5"


def grid_train_features(method, K, query):
    """Training feature files a ridge-λ method's spectra file is read with (the primal form
    reads them again rather than storing ΦV); none for other methods."""
    if method not in LAMBDA_METHODS:
        return []
    needs = method_needs(config, method, int(K), query)["train"]
    return [METHOD_INPUT_PATHS[need.file].format(**need.fields) for need in needs]


def grid_inputs(method, K, query):
    return {
        "scores": grid_path(method, K, query),
        "train": grid_train_features(method, K, query),
    }


# lds.gen_lambda: val — the gen split reports the λ that the val held-out curve chooses.
GEN_LAMBDA_FROM_VAL = config["lds"]["gen_lambda"] == "val" and "val" in QUERY_SPLITS


def gen_lambda_chooser(method, K, query):
    """The val grid whose held-out choice is the gen split's λ (``lds.gen_lambda: val``); none
    for the val split, for methods without λ or without a val score, and with
    ``gen_lambda: own``."""
    if query != "gen" or not GEN_LAMBDA_FROM_VAL or not method_uses_lambdas(method):
        return {}
    if "val" not in method_splits(config, method):  # gen-only kinds (Journey-TRAK)
        return {}
    inputs = grid_inputs(method, K, "val")
    return {"chooser_scores": inputs["scores"], "chooser_train": inputs["train"]}


def method_grid(wildcards):
    """Inputs of the jobs that evaluate one (method, K, split) on the λ grid."""
    return grid_inputs(wildcards.method, wildcards.K, wildcards.query)


def method_spectra(wildcards):
    """Inputs of select_scores and score_grid: the spectra file and its training features."""
    inputs = grid_inputs(wildcards.method, wildcards.K, wildcards.query)
    return {"spectra": inputs["scores"], "train": inputs["train"]}


def method_chooser(wildcards):
    """The extra inputs of the jobs that choose one (method, K, split)'s held-out λ."""
    return gen_lambda_chooser(wildcards.method, wildcards.K, wildcards.query)


def method_kind(wildcards):
    return METHODS[wildcards.method]["kind"]


def method_params(wildcards):
    return job_params(config, wildcards.method)


def lambda_grid(method):
    """The λ grid for methods with a ridge λ, [] otherwise (so a new grid reruns only those)."""
    return config["scoring"]["lambdas"] if method_uses_lambdas(method) else []


def method_lambdas(wildcards):
    return lambda_grid(wildcards.method)


def method_settings(wildcards):
    """Feature settings for kinds that run the model in their scoring job (EK-FAC), else {}."""
    from diffattr.methods import get_method

    if not get_method(METHODS[wildcards.method]["kind"]).uses_model:
        return {}
    return {
        "device": config["device"],
        "noise_seed": config["features"]["noise_seed"],
        "t_strategy": config["features"]["t_strategy"],
        "reference_noise": dict(config["features"]["reference_noise"]),
    }


def method_gpu(wildcards):
    from diffattr.methods import get_method

    return GPU if get_method(METHODS[wildcards.method]["kind"]).uses_model else 0


def main_snapshot_dirs():
    return [f"{RESULTS}/models/main-checkpoints/{p}" for p in SNAPSHOT_PERCENTS]


def main_snapshot_steps():
    training = config["training"]
    return snapshot_steps(
        training["epochs"], config["data"]["train_size"], training["batch_size"]
    )


def feature_model_dir(wildcards):
    """Weights a feature file is taken at: main, main-<percent> or retrain-<m> (own weights)."""
    name = wildcards.ckpt
    if name == "main":
        return f"{RESULTS}/models/main"
    if name.startswith("main-"):
        return f"{RESULTS}/models/main-checkpoints/{name[len('main-'):]}"
    seed = pool_seeds("retrain")[0]
    return model_dir("retrain", name[len("retrain-") :], seed)


#: features.structured_mixing and its mixer as params only where they differ from the defaults,
#: so that a change of the defaults does not rerun dense feature jobs, which ignore both
#: (Snakemake reruns jobs whose params change). A structured run made under other defaults
#: keeps its features, and a new feature file of another layout is refused beside them
#: (proj_layout_digest, diffattr.store.OPTIONAL_FEATURE_CHECK_KEYS).
PROJ_MIXING = (
    {}
    if (
        config["features"]["structured_mixing"],
        config["features"]["structured_mixer"],
    )
    == (
        schema_default("features.structured_mixing"),
        schema_default("features.structured_mixer"),
    )
    else {
        "proj_mixing": config["features"]["structured_mixing"],
        "proj_mixer": config["features"]["structured_mixer"],
    }
)


def noise_scheme(wildcards):
    """The feature-noise scheme of a noise tag (`common`, `common-s3`, ...)."""
    return split_noise_tag(wildcards.noise)[0]


def feature_noise_seed(wildcards):
    """The tag's own noise seed, else features.noise_seed."""
    seed = split_noise_tag(wildcards.noise)[1]
    return config["features"]["noise_seed"] if seed is None else seed


def noise_geometry(wildcards):
    """The reference scheme's (batch_size, shard_rows); zeros for the other schemes, so changing
    features.reference_noise reruns only reference-noise features."""
    if noise_scheme(wildcards) != "reference":
        return {"batch_size": 0, "shard_rows": 0}
    return dict(config["features"]["reference_noise"])


def attempt_scaled(base):
    """Resource (memory, runtime) that grows with each retry: a number, or a per-job estimate
    (a function of the wildcards)."""

    def scaled(wildcards, attempt):
        return (base(wildcards) if callable(base) else base) * attempt

    return scaled


def query_features_runtime(wildcards):
    rows = work.query_count(config, wildcards.query)
    return work.features_runtime(config, rows, int(wildcards.K))


def train_features_runtime(wildcards):
    return work.features_runtime(
        config, work.train_shard_rows(config), int(wildcards.K)
    )


def score_mem_mb(wildcards):
    return work.score_mem_mb(config, wildcards.query)


def select_mem_mb(wildcards):
    return work.select_mem_mb(config, wildcards.query, 1)


def score_runtime(stage, threads):
    """Runtime request of a scoring job of ``stage`` (diffattr.resources.score_flops)."""

    def runtime(wildcards):
        relative = METHODS[wildcards.method]["kind"] == "relative_if"
        return work.score_runtime(config, wildcards.query, stage, threads, relative)

    return runtime


def lds_mem_mb(wildcards):
    return work.lds_mem_mb(config, wildcards.query)


# The λ-grid evaluations run on the submit host unless they need more than 4 GB (paper scale,
# primal form: the [Z, Z] eigenvectors).
LDS_LOCAL = max(work.lds_mem_mb(config, q) for q in ("val", "gen")) <= 4000


def grid_mem_mb(wildcards):
    return work.select_mem_mb(
        config, wildcards.query, len(config["scoring"]["lambdas"])
    )


def score_grid_outputs():
    """Score matrices at every λ, when scoring.write_all_lambdas asks for them."""
    if not config["scoring"]["write_all_lambdas"]:
        return []
    return [
        f"{RESULTS}/score_grids/{m}/K{K}/{q}.h5"
        for m, K, q in lds_targets()
        if m in LAMBDA_METHODS
    ]


def final_outputs():
    return [
        f"{RESULTS}/summary.csv",
        f"{RESULTS}/summary.md",
        f"{RESULTS}/samples/gen.png",
        *report_outputs(),  # rules/report.smk
        *counterfactual_outputs(),  # rules/counterfactual.smk
        *checks_outputs(),  # rules/checks.smk
        *score_grid_outputs(),
    ]


def wildcard_text(name):
    """Param function returning one wildcard's value as text."""

    def value(wildcards):
        return wildcards[name]

    return value


def wildcard_int(name):
    """Param function returning one wildcard's value as an integer."""

    def value(wildcards):
        return int(wildcards[name])

    return value


def print_summary(path):
    """Print the results table at the end of a successful run."""
    import os

    if os.path.exists(path):
        with open(path) as handle:
            print(handle.read())
