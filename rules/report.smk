"""Figures and tables for `snakemake --report` under results/<experiment>/report/.

They are cheap (a few PNGs and HTML pages), so `make run` builds them with everything else and
`snakemake --report report.html` only collects them. report/workflow.rst puts overview.html on
the report's front page.
"""


rule plot_lds:
    input:
        lds=[f"{RESULTS}/lds/{m}/K{K}/{q}.json" for m, K, q in lds_targets()],
    output:
        bars=report(
            f"{REPORT}/lds.png",
            caption="../report/lds.rst",
            category="1. LDS",
        ),
        curves=report(
            f"{REPORT}/lambda_curves.png",
            caption="../report/lambda_curves.rst",
            category="1. LDS",
        ),
    log:
        f"{LOGS}/plot_lds.log",
    localrule: True
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        labels=[{"method": m, "K": K, "split": q} for m, K, q in lds_targets()],
    script:
        "../scripts/plot_lds.py"


rule plot_attribution_grid:
    input:
        scores=f"{RESULTS}/scores/{{method}}/K{{K}}/{{query}}.h5",
        lds=f"{RESULTS}/lds/{{method}}/K{{K}}/{{query}}.json",
        dataset=rules.prepare_data.output.dataset,
        samples=rules.generate_samples.output.samples,
    output:
        grid=report(
            f"{REPORT}/proponents/{{method}}/K{{K}}/{{query}}.png",
            caption="../report/proponents.rst",
            category="2. Proponents and opponents",
            subcategory="{query} queries",
            labels={"method": "{method}", "K": "{K}", "split": "{query}"},
        ),
    log:
        f"{LOGS}/plot_attribution_grid/{{method}}/K{{K}}/{{query}}.log",
    localrule: True
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=attempt_scaled(4000),
        runtime=10,
    params:
        split=wildcard_text("query"),
        queries=config["report"]["queries"],
        proponents=config["report"]["proponents"],
        opponents=config["report"]["opponents"],
        label=grid_label,
    script:
        "../scripts/plot_attribution_grid.py"


rule tabulate_runtimes:
    input:
        summary=rules.summarize.output.csv,
    output:
        table=report(
            f"{REPORT}/runtimes.html",
            caption="../report/runtimes.rst",
            category="4. Runtimes",
        ),
    log:
        f"{LOGS}/tabulate_runtimes.log",
    localrule: True
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        benchmarks=BENCHMARKS,
    script:
        "../scripts/tabulate_runtimes.py"


rule dump_config:
    output:
        page=report(
            f"{REPORT}/config.html",
            caption="../report/config.rst",
            category="5. Configuration",
        ),
    log:
        f"{LOGS}/dump_config.log",
    localrule: True
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        config=config,
    script:
        "../scripts/dump_config.py"


rule write_overview:
    input:
        summary=rules.summarize.output.csv,
        bars=rules.plot_lds.output.bars,
        curves=rules.plot_lds.output.curves,
        grid=overview_example(),
        counterfactual=counterfactual_figure(),
        findings=rules.summarize_checks.output.html,
        samples=rules.generate_samples.output.grid,
        quality=[f"{REPORT}/sample_quality.png"] if quality_record() else [],
        agreement=rules.check_attributions.output.figure,
    output:
        page=report(
            f"{REPORT}/overview.html",
            caption="../report/overview.rst",
            category="0. Overview",
        ),
    log:
        f"{LOGS}/write_overview.log",
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
        "../scripts/write_overview.py"
