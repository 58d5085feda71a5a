"""Score matrices: the TRAK kernel for the whole λ grid from one factorisation."""


rule score_trak:
    input:
        train=method_features("train"),
        test=method_features("query"),
    output:
        scores=f"{RESULTS}/scores/{{method}}/K{{K}}/{{query}}.h5",
    log:
        f"{LOGS}/score_trak/{{method}}/K{{K}}/{{query}}.log",
    benchmark:
        f"{BENCHMARKS}/score_trak/{{method}}/K{{K}}/{{query}}.tsv"
    threads: 2
    resources:
        mem_mb=attempt_scaled(8000),
        runtime=attempt_scaled(60),
    params:
        lambdas=config["scoring"]["lambdas"],
        chunk_rows=config["scoring"]["chunk_rows"],
        method=wildcard_text("method"),
        split=wildcard_text("query"),
    script:
        "../scripts/score_trak.py"
