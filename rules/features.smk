"""Features that methods score: projected per-sample gradients, trajectory and CLIP embeddings.

    features/{ckpt}/{fn}/{noise}/K{K}/{split}.h5
                                             gradients of f at K timesteps, projected; ckpt is
                                             main, main-25/50/75 (TracIn, GAS) or retrain-<m>
                                             (ensembles, each at its own weights); noise is the
                                             feature-noise scheme (docs/noise.md)
    features/main/{fn}/trajectory/gen.h5     Journey-TRAK gen features along the DDIM trajectory
    features/clip/{split}.h5                 CLIP image embeddings
    samples/gen-trajectory.h5                x̂0 at every DDIM step of the gen samples

Train-side gradient features are computed in `features.train_shards` jobs and merged in row order.
"""


rule extract_query_features:
    input:
        model=feature_model_dir,
        dataset=rules.prepare_data.output.dataset,
        samples=rules.generate_samples.output.samples,
    output:
        features=f"{RESULTS}/features/{{ckpt}}/{{fn}}/{{noise}}/K{{K}}/{{query}}.h5",
    log:
        f"{LOGS}/extract_features/{{ckpt}}/{{fn}}/{{noise}}/K{{K}}/{{query}}.log",
    benchmark:
        f"{BENCHMARKS}/extract_features/{{ckpt}}/{{fn}}/{{noise}}/K{{K}}/{{query}}.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=attempt_scaled(8000),
        runtime=attempt_scaled(query_features_runtime),
        gpu=GPU,
    params:
        **PROJ_MIXING,
        impl_version=IMPL_VERSION["features"],
        split=wildcard_text("query"),
        output_fn=wildcard_text("fn"),
        K=wildcard_int("K"),
        t_strategy=config["features"]["t_strategy"],
        proj_kind=config["features"]["proj_kind"],
        proj_dim=config["features"]["proj_dim"],
        proj_seed=config["features"]["proj_seed"],
        projection=config["features"]["projection"],
        proj_allocation=config["features"]["structured_allocation"],
        noise_seed=feature_noise_seed,
        noise=noise_scheme,
        noise_geometry=noise_geometry,
        device=config["device"],
        shard=0,
        num_shards=1,
    script:
        "../scripts/extract_features.py"


use rule extract_query_features as extract_train_features with:
    input:
        model=feature_model_dir,
        dataset=rules.prepare_data.output.dataset,
    output:
        features=f"{RESULTS}/features/{{ckpt}}/{{fn}}/{{noise}}/K{{K}}/train-shards/{{shard}}.h5",
    log:
        f"{LOGS}/extract_features/{{ckpt}}/{{fn}}/{{noise}}/K{{K}}/train-{{shard}}.log",
    benchmark:
        f"{BENCHMARKS}/extract_features/{{ckpt}}/{{fn}}/{{noise}}/K{{K}}/train-{{shard}}.tsv"
    resources:
        mem_mb=attempt_scaled(8000),
        runtime=attempt_scaled(train_features_runtime),
        gpu=GPU,
    params:
        **PROJ_MIXING,
        impl_version=IMPL_VERSION["features"],
        split="train",
        output_fn=wildcard_text("fn"),
        K=wildcard_int("K"),
        t_strategy=config["features"]["t_strategy"],
        proj_kind=config["features"]["proj_kind"],
        proj_dim=config["features"]["proj_dim"],
        proj_seed=config["features"]["proj_seed"],
        projection=config["features"]["projection"],
        proj_allocation=config["features"]["structured_allocation"],
        noise_seed=feature_noise_seed,
        noise=noise_scheme,
        noise_geometry=noise_geometry,
        device=config["device"],
        shard=wildcard_int("shard"),
        num_shards=config["features"]["train_shards"],


rule merge_train_features:
    input:
        shards=expand(
            f"{RESULTS}/features/{{{{ckpt}}}}/{{{{fn}}}}/{{{{noise}}}}/K{{{{K}}}}/train-shards/{{shard}}.h5",
            shard=range(config["features"]["train_shards"]),
        ),
    output:
        features=f"{RESULTS}/features/{{ckpt}}/{{fn}}/{{noise}}/K{{K}}/train.h5",
    log:
        f"{LOGS}/merge_train_features/{{ckpt}}/{{fn}}/{{noise}}/K{{K}}.log",
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=attempt_scaled(work.merge_mem_mb(config)),
        runtime=30,
    script:
        "../scripts/merge_features.py"


rule record_trajectory:
    input:
        model=rules.train_main.output.model,
        samples=rules.generate_samples.output.samples,
    output:
        trajectory=f"{RESULTS}/samples/gen-trajectory.h5",
    log:
        f"{LOGS}/record_trajectory.log",
    benchmark:
        f"{BENCHMARKS}/record_trajectory.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=attempt_scaled(8000),
        runtime=attempt_scaled(
            work.generation_runtime(config, config["generation"]["num_samples"])
        ),
        gpu=GPU,
    params:
        impl_version=IMPL_VERSION["generation"],
        device=config["device"],
    script:
        "../scripts/record_trajectory.py"


rule extract_trajectory_features:
    input:
        model=rules.train_main.output.model,
        dataset=rules.prepare_data.output.dataset,
        samples=rules.generate_samples.output.samples,
        trajectory=rules.record_trajectory.output.trajectory,
    output:
        features=f"{RESULTS}/features/main/{{fn}}/trajectory/gen.h5",
    log:
        f"{LOGS}/extract_trajectory_features/{{fn}}.log",
    benchmark:
        f"{BENCHMARKS}/extract_trajectory_features/{{fn}}.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=attempt_scaled(8000),
        runtime=attempt_scaled(
            work.features_runtime(
                config,
                config["generation"]["num_samples"],
                config["generation"]["steps"],
            )
        ),
        gpu=GPU,
    params:
        **PROJ_MIXING,
        impl_version=IMPL_VERSION["features"],
        output_fn=wildcard_text("fn"),
        proj_kind=config["features"]["proj_kind"],
        proj_dim=config["features"]["proj_dim"],
        proj_seed=config["features"]["proj_seed"],
        projection=config["features"]["projection"],
        proj_allocation=config["features"]["structured_allocation"],
        noise_seed=config["features"]["noise_seed"],
        device=config["device"],
    script:
        "../scripts/extract_trajectory_features.py"


rule embed_clip:
    input:
        dataset=rules.prepare_data.output.dataset,
        samples=rules.generate_samples.output.samples,
    output:
        features=f"{RESULTS}/features/clip/{{split}}.h5",
    log:
        f"{LOGS}/embed_clip/{{split}}.log",
    benchmark:
        f"{BENCHMARKS}/embed_clip/{{split}}.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=attempt_scaled(8000),
        runtime=attempt_scaled(60),
        gpu=GPU,
    params:
        impl_version=IMPL_VERSION["features"],
        split=wildcard_text("split"),
        weights=config["clip"]["weights"],
        device=config["device"],
    script:
        "../scripts/embed_clip.py"
