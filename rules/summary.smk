"""The results table of the experiment: summary.csv, summary.md and paired.csv (paired
bootstrap of the LDS differences of lds.pairs)."""


rule summarize:
    input:
        lds=lds_records(),
        ceiling=rules.noise_ceiling.output.ceiling,
        groundtruth=f"{RESULTS}/groundtruth/lds.h5",
        counterfactual=counterfactual_summary_record(),  # rules/counterfactual.smk
    output:
        **counterfactual_summary_table(),
        csv=f"{RESULTS}/summary.csv",
        md=f"{RESULTS}/summary.md",
        paired=f"{RESULTS}/paired.csv",
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
        pairs=config["lds"]["pairs"],
        paired_resamples=config["lds"]["paired_resamples"],
        paired_seed=config["lds"]["bootstrap_seed"],
    script:
        "../scripts/summarize.py"
