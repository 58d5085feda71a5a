"""Splits and subsets: the dataset file and one file per LDS subset."""


rule prepare_data:
    output:
        dataset=f"{RESULTS}/data/dataset.h5",
    log:
        f"{LOGS}/prepare_data.log",
    benchmark:
        f"{BENCHMARKS}/prepare_data.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        data=config["data"],
    script:
        "../scripts/prepare_data.py"


rule draw_subset:
    input:
        dataset=rules.prepare_data.output.dataset,
    output:
        subset=f"{RESULTS}/subsets/{{pool}}/{{k}}.h5",
    log:
        f"{LOGS}/draw_subset/{{pool}}/{{k}}.log",
    localrule: True
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        pool=wildcard_text("pool"),
        k=wildcard_int("k"),
        alpha=config["subsets"]["alpha"],
        pool_seed=subset_pool_seed,
        stratify=config["data"]["stratify"],
    script:
        "../scripts/draw_subset.py"
