"""Training: the main model and one model per (pool, subset, training seed).

The main run also saves its weights at 25/50/75% of its steps (models/main-checkpoints/), the
checkpoints TracIn and GAS average over (diffattr.snapshots).

Checkpoints for resuming live under .checkpoints/, outside the declared outputs, and are removed
after success. `impl_version` is an explicit param: bump IMPL_VERSION["training"] (rules/common.smk)
to force retraining after a change of the training algorithm (the slurm profile does not rerun on
script mtime).
"""


rule train_main:
    input:
        dataset=rules.prepare_data.output.dataset,
    output:
        model=directory(f"{RESULTS}/models/main"),
        snapshots=[directory(path) for path in main_snapshot_dirs()],
    log:
        f"{LOGS}/train_main.log",
    benchmark:
        f"{BENCHMARKS}/train_main.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=attempt_scaled(8000),
        runtime=attempt_scaled(work.training_runtime(config, "main")),
        gpu=GPU,
    params:
        checkpoint_dir=f"{CHECKPOINTS}/main",
        snapshot_staging=f"{CHECKPOINTS}/main-snapshots",
        snapshot_steps=main_snapshot_steps(),
        model=model_params,
        scheduler=scheduler_params,
        training=training_params,
        seed=config["training"]["main_seed"],
        device=config["device"],
        impl_version=IMPL_VERSION["training"],
    script:
        "../scripts/train_main.py"


rule train_subset:
    input:
        dataset=rules.prepare_data.output.dataset,
        subset=f"{RESULTS}/subsets/{{pool}}/{{k}}.h5",
    output:
        model=directory(f"{RESULTS}/models/{{pool}}/{{k}}/seed{{seed}}"),
    log:
        f"{LOGS}/train_subset/{{pool}}/{{k}}/seed{{seed}}.log",
    benchmark:
        f"{BENCHMARKS}/train_subset/{{pool}}/{{k}}/seed{{seed}}.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=attempt_scaled(8000),
        runtime=attempt_scaled(work.training_runtime(config, "subset")),
        gpu=GPU,
    params:
        checkpoint_dir=f"{CHECKPOINTS}/{{pool}}/{{k}}/seed{{seed}}",
        model=model_params,
        scheduler=scheduler_params,
        training=training_params,
        seed=subset_model_seed,
        device=config["device"],
        impl_version=IMPL_VERSION["training"],
    script:
        "../scripts/train_model.py"
