"""Score matrices of every configured method: scores/{method}/K{K}/{query}.h5.

One rule for every method kind: the kind (diffattr.methods) declares which files it reads, so a
new method is a module and a config entry. Methods that use no timesteps (raw pixel, CLIP,
empirical influence, datamodels) are stored under K0; methods without a ridge λ store one score
matrix with λ = 0 and get no λ grid as a param, so a new grid reruns only the λ methods.
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
