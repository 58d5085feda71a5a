"""The results table of the experiment: summary.csv and summary.md."""


rule summarize:
    input:
        lds=lds_records(),
        ceiling=rules.noise_ceiling.output.ceiling,
        counterfactual=counterfactual_summary_record(),  # rules/counterfactual.smk
    output:
        **counterfactual_summary_table(),
        csv=f"{RESULTS}/summary.csv",
        md=f"{RESULTS}/summary.md",
    log:
        f"{LOGS}/summarize.log",
    localrule: True
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        experiment=EXPERIMENT,
    script:
        "../scripts/summarize.py"
