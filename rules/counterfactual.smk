"""Counterfactual evaluation (protocol §6), one file per step and per (method, target):

    counterfactual/targets.h5                       the generated images to explain
    counterfactual/lambda/{method}.json             held-out λ of a scored method (gen split)
    counterfactual/removals/{method}/{target}.h5    removed rows (ranked), kept rows, scores
    counterfactual/models/{method}/{target}         retrained without the removed rows
    counterfactual/regenerated/{method}/{target}.h5 the target regenerated from the same noise
    counterfactual/metrics/{method}/{target}.json   l2 / SSIM / CLIP vs the original
    counterfactual/metrics.csv, paired.csv, summary.json, figure.png

({method} and {target} are the wildcards cf_method and cf_target.)

Targets are a pure function of the config (parse time), so the per-target jobs do not depend
on targets.h5, and raising num_targets adds jobs without rerunning the earlier ones. The λ is
chosen from the held-out pool alone: adding benchmark subsets retrains nothing here.
"""


rule select_counterfactual_targets:
    input:
        samples=rules.generate_samples.output.samples,
    output:
        targets=f"{CF}/targets.h5",
    log:
        f"{LOGS}/counterfactual/select_targets.log",
    localrule: True
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        num_targets=COUNTERFACTUAL["num_targets"],
        target_seed=COUNTERFACTUAL["target_seed"],
        planned=CF_TARGETS,
    script:
        "../scripts/select_counterfactual_targets.py"


rule choose_counterfactual_lambda:
    input:
        scores=cf_method_scores,
        heldout=f"{RESULTS}/groundtruth/heldout.h5",
    output:
        choice=f"{CF}/lambda/{{cf_method}}.json",
    log:
        f"{LOGS}/counterfactual/lambda/{{cf_method}}.log",
    wildcard_constraints:
        cf_method="|".join(re.escape(name) for name in CF_SCORED) or "^$",
    localrule: True
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=attempt_scaled(4000),
        runtime=30,
    params:
        method=wildcard_text("cf_method"),
        K=cf_method_K,
    script:
        "../scripts/choose_counterfactual_lambda.py"


rule remove_top_examples:
    input:
        unpack(counterfactual_ranking),
        dataset=rules.prepare_data.output.dataset,
    output:
        removal=f"{CF}/removals/{{cf_method}}/{{cf_target}}.h5",
    log:
        f"{LOGS}/counterfactual/removals/{{cf_method}}/{{cf_target}}.log",
    localrule: True
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=attempt_scaled(4000),
        runtime=10,
    params:
        method=wildcard_text("cf_method"),
        target=wildcard_int("cf_target"),
        top_k=COUNTERFACTUAL["top_k"],
        top_fraction=COUNTERFACTUAL["top_fraction"],
        random_seed=COUNTERFACTUAL["random_seed"],
    script:
        "../scripts/remove_top_examples.py"


rule train_counterfactual:
    input:
        dataset=rules.prepare_data.output.dataset,
        subset=rules.remove_top_examples.output.removal,
    output:
        model=directory(f"{CF}/models/{{cf_method}}/{{cf_target}}"),
    log:
        f"{LOGS}/counterfactual/train/{{cf_method}}/{{cf_target}}.log",
    benchmark:
        f"{BENCHMARKS}/counterfactual/train/{{cf_method}}/{{cf_target}}.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=attempt_scaled(8000),
        runtime=attempt_scaled(work.training_runtime(config, "counterfactual")),
        gpu=GPU,
    params:
        checkpoint_dir=f"{CHECKPOINTS}/counterfactual/{{cf_method}}/{{cf_target}}",
        model=model_params,
        scheduler=scheduler_params,
        training=training_params,
        seed=config["training"]["main_seed"],
        device=config["device"],
        impl_version=IMPL_VERSION["training"],
    script:
        "../scripts/train_model.py"


rule regenerate_counterfactual:
    input:
        model=rules.train_counterfactual.output.model,
        samples=rules.generate_samples.output.samples,
    output:
        regenerated=f"{CF}/regenerated/{{cf_method}}/{{cf_target}}.h5",
    log:
        f"{LOGS}/counterfactual/regenerate/{{cf_method}}/{{cf_target}}.log",
    benchmark:
        f"{BENCHMARKS}/counterfactual/regenerate/{{cf_method}}/{{cf_target}}.tsv"
    conda:
        CONDA_ENV
    threads: 1  # as generate_samples: the same thread count keeps CPU results bit-identical
    resources:
        mem_mb=attempt_scaled(8000),
        runtime=attempt_scaled(
            work.generation_runtime(config, config["generation"]["batch_size"])
        ),
        gpu=GPU,
    params:
        impl_version=IMPL_VERSION["generation"],
        method=wildcard_text("cf_method"),
        target=wildcard_int("cf_target"),
        device=config["device"],
    script:
        "../scripts/regenerate_counterfactual.py"


rule compare_counterfactual:
    input:
        unpack(cf_latent_model),
        samples=rules.generate_samples.output.samples,
        regenerated=rules.regenerate_counterfactual.output.regenerated,
    output:
        metrics=f"{CF}/metrics/{{cf_method}}/{{cf_target}}.json",
    log:
        f"{LOGS}/counterfactual/metrics/{{cf_method}}/{{cf_target}}.log",
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=attempt_scaled(4000),
        runtime=10,
    params:
        metrics=COUNTERFACTUAL["metrics"],
        clip_weights=config["clip"]["weights"],
        device=config["device"],
    script:
        "../scripts/compare_counterfactual.py"


rule collect_counterfactual:
    input:
        targets=rules.select_counterfactual_targets.output.targets,
        metrics=cf_files(f"{CF}/metrics/{{cf_method}}/{{cf_target}}.json"),
        removals=cf_files(f"{CF}/removals/{{cf_method}}/{{cf_target}}.h5"),
        choices=expand(f"{CF}/lambda/{{method}}.json", method=CF_SCORED),
        lds=cf_lds_records(),
    output:
        table=f"{CF}/metrics.csv",
        paired=f"{CF}/paired.csv",
        summary=f"{CF}/summary.json",
    log:
        f"{LOGS}/counterfactual/collect.log",
    localrule: True
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        methods=CF_METHODS,
    script:
        "../scripts/collect_counterfactual.py"


rule plot_counterfactual:
    input:
        samples=rules.generate_samples.output.samples,
        dataset=rules.prepare_data.output.dataset,
        regenerated=cf_files(
            f"{CF}/regenerated/{{cf_method}}/{{cf_target}}.h5", cf_figure_targets()
        ),
        removals=cf_files(
            f"{CF}/removals/{{cf_method}}/{{cf_target}}.h5", cf_figure_targets()
        ),
        metrics=cf_files(
            f"{CF}/metrics/{{cf_method}}/{{cf_target}}.json", cf_figure_targets()
        ),
    output:
        figure=f"{CF}/figure.png",
    log:
        f"{LOGS}/counterfactual/plot.log",
    localrule: True
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        methods=CF_METHODS,
        figure_removed=COUNTERFACTUAL["figure_removed"],
    script:
        "../scripts/plot_counterfactual.py"
