"""The results table of the experiment: summary.csv and summary.md."""


def lds_records():
    return expand(
        f"{RESULTS}/lds/{{method}}/K{{K}}/{{query}}.json",
        method=METHODS,
        K=KS,
        query=QUERY_SPLITS,
    )


rule summarize:
    input:
        lds=lds_records(),
        ceiling=rules.noise_ceiling.output.ceiling,
    output:
        csv=f"{RESULTS}/summary.csv",
        md=f"{RESULTS}/summary.md",
    log:
        f"{LOGS}/summarize.log",
    localrule: True
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        experiment=EXPERIMENT,
    script:
        "../scripts/summarize.py"
