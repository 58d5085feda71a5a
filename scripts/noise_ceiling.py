"""Snakemake adapter: seed-to-seed noise ceiling of the benchmark."""

from diffattr.jobs import job_logging, noise_ceiling_job

with job_logging(snakemake.log[0], snakemake.threads):
    noise_ceiling_job(
        snakemake.input.groundtruth, snakemake.output.ceiling, snakemake.params.splits
    )
