"""Ground truth per pool, LDS per (method, K, split), and the seed-to-seed noise ceiling.

Only these aggregate rules expand over subsets, so adding subsets reruns them and the new
subsets' jobs, and nothing else.
"""


rule collect_groundtruth:
    input:
        dataset=rules.prepare_data.output.dataset,
        subsets=pool_subset_files,
        measured=pool_measured_files,
    output:
        groundtruth=f"{RESULTS}/groundtruth/{{pool}}.h5",
    log:
        f"{LOGS}/collect_groundtruth/{{pool}}.log",
    localrule: True
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=attempt_scaled(4000),
        runtime=30,
    params:
        pool=wildcard_text("pool"),
        splits=MEASURED_SPLITS,
        measured_by_seed=pool_measured_by_seed,
    script:
        "../scripts/collect_groundtruth.py"


rule evaluate_lds:
    input:
        unpack(method_grid),
        unpack(method_chooser),
        groundtruth=f"{RESULTS}/groundtruth/lds.h5",
        heldout=f"{RESULTS}/groundtruth/heldout.h5",
    output:
        lds=f"{RESULTS}/lds/{{method}}/K{{K}}/{{query}}.json",
    log:
        f"{LOGS}/evaluate_lds/{{method}}/K{{K}}/{{query}}.log",
    localrule: LDS_LOCAL
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=attempt_scaled(lds_mem_mb),
        runtime=attempt_scaled(score_runtime("lds", 1)),
    params:
        split=wildcard_text("query"),
        bootstrap_resamples=config["lds"]["bootstrap_resamples"],
        bootstrap_seed=config["lds"]["bootstrap_seed"],
        lambdas=method_lambdas,
    script:
        "../scripts/evaluate_lds.py"


rule noise_ceiling:
    input:
        groundtruth=f"{RESULTS}/groundtruth/lds.h5",
    output:
        ceiling=f"{RESULTS}/lds/noise_ceiling.json",
    log:
        f"{LOGS}/noise_ceiling.log",
    localrule: True
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        splits=QUERY_SPLITS,
    script:
        "../scripts/noise_ceiling.py"
