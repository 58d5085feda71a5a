"""Projected per-sample gradient features of the main model, per output function and K.

Train-side features are computed in `features.train_shards` jobs and merged in row order.
"""


def feature_params():
    return config["features"]


rule extract_query_features:
    input:
        model=rules.train_main.output.model,
        dataset=rules.prepare_data.output.dataset,
        samples=rules.generate_samples.output.samples,
    output:
        features=f"{RESULTS}/features/{{fn}}/K{{K}}/{{query}}.h5",
    log:
        f"{LOGS}/extract_features/{{fn}}/K{{K}}/{{query}}.log",
    benchmark:
        f"{BENCHMARKS}/extract_features/{{fn}}/K{{K}}/{{query}}.tsv"
    threads: 1
    resources:
        mem_mb=attempt_scaled(8000),
        runtime=attempt_scaled(120),
        gpu=GPU,
    params:
        split=wildcard_text("query"),
        output_fn=wildcard_text("fn"),
        K=wildcard_int("K"),
        t_strategy=config["features"]["t_strategy"],
        proj_kind=config["features"]["proj_kind"],
        proj_dim=config["features"]["proj_dim"],
        proj_seed=config["features"]["proj_seed"],
        noise_seed=config["features"]["noise_seed"],
        batch_size=config["features"]["batch_size"],
        device=config["device"],
        shard=0,
        num_shards=1,
    script:
        "../scripts/extract_features.py"


use rule extract_query_features as extract_train_features with:
    input:
        model=rules.train_main.output.model,
        dataset=rules.prepare_data.output.dataset,
    output:
        features=f"{RESULTS}/features/{{fn}}/K{{K}}/train-shards/{{shard}}.h5",
    log:
        f"{LOGS}/extract_features/{{fn}}/K{{K}}/train-{{shard}}.log",
    benchmark:
        f"{BENCHMARKS}/extract_features/{{fn}}/K{{K}}/train-{{shard}}.tsv"
    params:
        split="train",
        output_fn=wildcard_text("fn"),
        K=wildcard_int("K"),
        t_strategy=config["features"]["t_strategy"],
        proj_kind=config["features"]["proj_kind"],
        proj_dim=config["features"]["proj_dim"],
        proj_seed=config["features"]["proj_seed"],
        noise_seed=config["features"]["noise_seed"],
        batch_size=config["features"]["batch_size"],
        device=config["device"],
        shard=wildcard_int("shard"),
        num_shards=config["features"]["train_shards"],


rule merge_train_features:
    input:
        shards=expand(
            f"{RESULTS}/features/{{{{fn}}}}/K{{{{K}}}}/train-shards/{{shard}}.h5",
            shard=range(config["features"]["train_shards"]),
        ),
    output:
        features=f"{RESULTS}/features/{{fn}}/K{{K}}/train.h5",
    log:
        f"{LOGS}/merge_train_features/{{fn}}/K{{K}}.log",
    threads: 1
    resources:
        mem_mb=attempt_scaled(4000),
        runtime=30,
    script:
        "../scripts/merge_features.py"
