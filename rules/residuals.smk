"""DAS's residual profiles of the training set (forward passes only, diffattr.residuals):

residuals/main/S{S}.h5     RMSE of ε̂ at S uniform timesteps per training image, and w_i
"""


rule compute_residuals:
    input:
        model=rules.train_main.output.model,
        dataset=rules.prepare_data.output.dataset,
    output:
        residuals=f"{RESULTS}/residuals/main/S{{S}}.h5",
    log:
        f"{LOGS}/compute_residuals/S{{S}}.log",
    benchmark:
        f"{BENCHMARKS}/compute_residuals/S{{S}}.tsv"
    wildcard_constraints:
        S=r"\d+",
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=attempt_scaled(8000),
        runtime=attempt_scaled(
            lambda wildcards: work.residuals_runtime(config, int(wildcards.S))
        ),
        gpu=GPU,
    params:
        impl_version=IMPL_VERSION["features"],
        S=wildcard_int("S"),
        noise_seed=config["features"]["noise_seed"],
        device=config["device"],
    script:
        "../scripts/compute_residuals.py"
