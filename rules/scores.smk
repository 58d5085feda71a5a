"""Score matrices of every configured method: scores/{method}/K{K}/{query}.h5.

One rule per stage for every method kind: the kind (diffattr.methods) declares which files it
reads, so a new method is a module and a config entry. Methods that use no timesteps (raw pixel,
CLIP, empirical influence, datamodels) are stored under K0.

Methods without a ridge λ (score_method) write one score matrix with λ = 0. Methods with a
ridge λ (the TRAK family) store one factorisation per (method, K, split) in
spectra/{method}/K{K}/{query}.h5 (factor_method, independent of the λ grid); the LDS jobs
evaluate the whole grid from it (diffattr.spectral), and select_scores writes their score file
only at the held-out λ, which the proponent figures and the counterfactual removals use. With
scoring.write_all_lambdas, score_grid also writes score_grids/{method}/K{K}/{query}.h5 at every
λ (nothing else reads them, so turning it on adds only those jobs). A new λ grid reruns no
factorisation.
"""


rule score_method:
    input:
        unpack(method_inputs),
    output:
        scores=f"{RESULTS}/scores/{{method}}/K{{K}}/{{query}}.h5",
    log:
        f"{LOGS}/score_method/{{method}}/K{{K}}/{{query}}.log",
    benchmark:
        f"{BENCHMARKS}/score_method/{{method}}/K{{K}}/{{query}}.tsv"
    wildcard_constraints:
        method=method_pattern(LAMBDA_METHODS, invert=True),
    conda:
        CONDA_ENV
    threads: 2
    resources:
        mem_mb=attempt_scaled(score_mem_mb),
        runtime=attempt_scaled(60),
        gpu=method_gpu,
    params:
        kind=method_kind,
        params=method_params,
        lambdas=method_lambdas,
        chunk_rows=config["scoring"]["chunk_rows"],
        method=wildcard_text("method"),
        K=wildcard_int("K"),
        split=wildcard_text("query"),
        settings=method_settings,
    script:
        "../scripts/score_method.py"


rule factor_method:
    input:
        unpack(method_inputs),
    output:
        scores=f"{RESULTS}/spectra/{{method}}/K{{K}}/{{query}}.h5",  # score_method.py writes it
    log:
        f"{LOGS}/factor_method/{{method}}/K{{K}}/{{query}}.log",
    benchmark:
        f"{BENCHMARKS}/factor_method/{{method}}/K{{K}}/{{query}}.tsv"
    wildcard_constraints:
        method=method_pattern(LAMBDA_METHODS),
    conda:
        CONDA_ENV
    threads: 2
    resources:
        mem_mb=attempt_scaled(score_mem_mb),
        runtime=attempt_scaled(score_runtime("factor", 2)),
    params:
        kind=method_kind,
        params=method_params,
        lambdas=[],
        chunk_rows=config["scoring"]["chunk_rows"],
        method=wildcard_text("method"),
        K=wildcard_int("K"),
        split=wildcard_text("query"),
        settings=method_settings,
    script:
        "../scripts/score_method.py"


rule select_scores:
    input:
        unpack(method_spectra),
        unpack(method_chooser),
        heldout=f"{RESULTS}/groundtruth/heldout.h5",
    output:
        scores=f"{RESULTS}/scores/{{method}}/K{{K}}/{{query}}.h5",
    log:
        f"{LOGS}/select_scores/{{method}}/K{{K}}/{{query}}.log",
    benchmark:
        f"{BENCHMARKS}/select_scores/{{method}}/K{{K}}/{{query}}.tsv"
    wildcard_constraints:
        method=method_pattern(LAMBDA_METHODS),
    conda:
        CONDA_ENV
    threads: 2
    resources:
        mem_mb=attempt_scaled(select_mem_mb),
        runtime=attempt_scaled(score_runtime("select", 2)),
    params:
        split=wildcard_text("query"),
        lambdas=config["scoring"]["lambdas"],
        chunk_rows=config["scoring"]["chunk_rows"],
    script:
        "../scripts/select_scores.py"


rule score_grid:
    input:
        unpack(method_spectra),
    output:
        scores=f"{RESULTS}/score_grids/{{method}}/K{{K}}/{{query}}.h5",
    log:
        f"{LOGS}/score_grid/{{method}}/K{{K}}/{{query}}.log",
    benchmark:
        f"{BENCHMARKS}/score_grid/{{method}}/K{{K}}/{{query}}.tsv"
    wildcard_constraints:
        method=method_pattern(LAMBDA_METHODS),
    conda:
        CONDA_ENV
    threads: 2
    resources:
        mem_mb=attempt_scaled(grid_mem_mb),
        runtime=attempt_scaled(score_runtime("grid", 2)),
    params:
        lambdas=config["scoring"]["lambdas"],
        chunk_rows=config["scoring"]["chunk_rows"],
    script:
        "../scripts/score_grid.py"
