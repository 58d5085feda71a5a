"""Config validation, paths and wildcard helpers shared by every rule file."""

from diffattr.config import validate_config

config.update(validate_config(config))

EXPERIMENT = config["experiment"]
RESULTS = f"results/{EXPERIMENT}"
LOGS = f"logs/{EXPERIMENT}"
BENCHMARKS = f"benchmarks/{EXPERIMENT}"
CHECKPOINTS = f".checkpoints/{EXPERIMENT}"

POOLS = ["lds", "heldout"]
QUERY_SPLITS = config["lds"]["splits"]
MEASURED_SPLITS = sorted(set(QUERY_SPLITS))
METHODS = config["methods"]
KS = config["features"]["K"]
GPU = 0 if config["device"] == "cpu" else 1


wildcard_constraints:
    pool="|".join(POOLS),
    k=r"\d+",
    seed=r"\d+",
    split="train|val|gen",
    query="val|gen",
    shard=r"\d+",
    K=r"\d+",
    fn=r"[a-z0-9_]+",
    method="|".join(METHODS),


def pool_config(pool):
    return config["subsets"][pool]


def pool_subsets(pool):
    return range(pool_config(pool)["num_subsets"])


def pool_seeds(pool):
    return pool_config(pool)["train_seeds"]


def training_params(wildcards):
    """Training hyperparameters; the same for the main and every subset model."""
    return config["training"]


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


def method_output_fn(wildcards):
    return METHODS[wildcards.method]["output_fn"]


def method_features(kind):
    """Input function: features of a method's output function for the train or query split."""

    def inputs(wildcards):
        fn = METHODS[wildcards.method]["output_fn"]
        split = "train" if kind == "train" else wildcards.query
        return f"{RESULTS}/features/{fn}/K{wildcards.K}/{split}.h5"

    return inputs


def attempt_scaled(base):
    """Resource that grows with each retry (memory, runtime)."""

    def scaled(wildcards, attempt):
        return base * attempt

    return scaled


def final_outputs():
    return [
        f"{RESULTS}/summary.csv",
        f"{RESULTS}/summary.md",
        f"{RESULTS}/samples/gen.png",
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
