"""Model passes that DAS and EK-FAC add (diffattr.residuals, diffattr.ekfac):

residuals/main/{noise}/S{S}.h5        DAS: RMSE of ε̂ at S uniform timesteps per training image, w_i
ekfac/main/{noise}/T{T}-{strategy}/   kronfluence factors of the main model (T timesteps per image)
"""


rule compute_residuals:
    input:
        model=rules.train_main.output.model,
        dataset=rules.prepare_data.output.dataset,
    output:
        residuals=f"{RESULTS}/residuals/main/{{noise}}/S{{S}}.h5",
    log:
        f"{LOGS}/compute_residuals/{{noise}}/S{{S}}.log",
    benchmark:
        f"{BENCHMARKS}/compute_residuals/{{noise}}/S{{S}}.tsv"
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
        noise=wildcard_text("noise"),
        noise_geometry=noise_geometry,
        device=config["device"],
    script:
        "../scripts/compute_residuals.py"


rule fit_ekfac_factors:
    input:
        model=rules.train_main.output.model,
        dataset=rules.prepare_data.output.dataset,
    output:
        factors=directory(f"{RESULTS}/ekfac/main/{{noise}}/T{{T}}-{{strategy}}"),
    log:
        f"{LOGS}/fit_ekfac_factors/{{noise}}/T{{T}}-{{strategy}}.log",
    benchmark:
        f"{BENCHMARKS}/fit_ekfac_factors/{{noise}}/T{{T}}-{{strategy}}.tsv"
    wildcard_constraints:
        T=r"\d+",
        strategy="ekfac|kfac|diagonal|identity",
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=attempt_scaled(8000),
        runtime=attempt_scaled(
            lambda wildcards: 3 * work.residuals_runtime(config, int(wildcards.T))
        ),
        gpu=GPU,
    params:
        impl_version=IMPL_VERSION["features"],
        T=wildcard_int("T"),
        strategy=wildcard_text("strategy"),
        noise_seed=config["features"]["noise_seed"],
        noise=wildcard_text("noise"),
        noise_geometry=noise_geometry,
        device=config["device"],
    script:
        "../scripts/fit_ekfac_factors.py"
