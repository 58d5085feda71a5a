"""The generated query set: seeded DDIM samples of the main model."""


rule generate_samples:
    input:
        model=rules.train_main.output.model,
        dataset=rules.prepare_data.output.dataset,  # class captions: default prompts
    output:
        samples=f"{RESULTS}/samples/gen.h5",
        grid=f"{RESULTS}/samples/gen.png",
    log:
        f"{LOGS}/generate_samples.log",
    benchmark:
        f"{BENCHMARKS}/generate_samples.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=attempt_scaled(8000),
        runtime=attempt_scaled(
            work.generation_runtime(config, config["generation"]["num_samples"])
        ),
        gpu=GPU,
    params:
        impl_version=IMPL_VERSION["generation"],
        num_samples=config["generation"]["num_samples"],
        steps=config["generation"]["steps"],
        eta=config["generation"]["eta"],
        seed=config["generation"]["seed"],
        grid_columns=config["generation"]["grid_columns"],
        guidance_scale=config["generation"]["guidance_scale"],
        prompts=config["generation"]["prompts"],
        device=config["device"],
    script:
        "../scripts/generate_samples.py"
