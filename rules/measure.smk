"""Measured outputs: every subset model's per-sample loss (or measure.output) on the query
splits."""


rule measure_outputs:
    input:
        model=f"{RESULTS}/models/{{pool}}/{{k}}/seed{{seed}}",
        dataset=rules.prepare_data.output.dataset,
        samples=rules.generate_samples.output.samples,
    output:
        measured=f"{RESULTS}/measured/{{pool}}/{{k}}/seed{{seed}}.h5",
    log:
        f"{LOGS}/measure_outputs/{{pool}}/{{k}}/seed{{seed}}.log",
    benchmark:
        f"{BENCHMARKS}/measure_outputs/{{pool}}/{{k}}/seed{{seed}}.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=attempt_scaled(8000),
        runtime=attempt_scaled(work.measure_runtime(config, MEASURED_SPLITS)),
        gpu=GPU,
    params:
        **measure_output_param(),
        impl_version=IMPL_VERSION["measurement"],
        splits=MEASURED_SPLITS,
        timesteps=config["measure"]["timesteps"],
        noise_seeds=config["measure"]["noise_seeds"],
        device=config["device"],
    script:
        "../scripts/measure_outputs.py"
