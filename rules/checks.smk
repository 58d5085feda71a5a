"""Checks a reader can follow by eye: are the samples recognisable digits, do proponents share
their query's class, and what the run found in plain words (checks.md, the report's first
screen). All cheap bookkeeping, so local rules."""


rule assess_samples:
    input:
        samples=rules.generate_samples.output.samples,
        dataset=rules.prepare_data.output.dataset,
    output:
        record=f"{RESULTS}/samples/quality.json",
        figure=report(
            f"{REPORT}/sample_quality.png",
            caption="../report/sample_quality.rst",
            category="0. Overview",
        ),
    log:
        f"{LOGS}/assess_samples.log",
    localrule: True
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/assess_samples.py"


rule check_attributions:
    input:
        scores=[f"{RESULTS}/scores/{m}/K{K}/{q}.h5" for m, K, q in sanity_targets()],
        lds=[f"{RESULTS}/lds/{m}/K{K}/{q}.json" for m, K, q in sanity_targets()],
        dataset=rules.prepare_data.output.dataset,
        quality=quality_record(),
    output:
        record=f"{RESULTS}/checks/class_agreement.json",
        figure=report(
            f"{REPORT}/class_agreement.png",
            caption="../report/class_agreement.rst",
            category="2. Proponents and opponents",
        ),
    log:
        f"{LOGS}/check_attributions.log",
    localrule: True
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=attempt_scaled(2000),
        runtime=10,
    params:
        labels=[{"method": m, "K": K, "split": q} for m, K, q in sanity_targets()],
        top=config["report"]["proponents"],
    script:
        "../scripts/check_attributions.py"


rule summarize_checks:
    input:
        summary=rules.summarize.output.csv,
        quality=quality_record(),
        sanity=rules.check_attributions.output.record,
        counterfactual=list(filter(None, [counterfactual_summary_record()])),
    output:
        md=f"{RESULTS}/checks.md",
        html=f"{REPORT}/findings.html",
    log:
        f"{LOGS}/summarize_checks.log",
    localrule: True
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        method_kinds={name: m["kind"] for name, m in METHODS.items()},
        run=run_description(),
    script:
        "../scripts/summarize_checks.py"
