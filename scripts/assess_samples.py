"""Snakemake adapter: sample quality (classifier on the real training images) and copy check."""

from diffattr.jobs import job_logging
from diffattr.sample_quality import sample_quality_job

with job_logging(snakemake.log[0], snakemake.threads):
    sample_quality_job(
        snakemake.input.dataset,
        snakemake.input.samples,
        snakemake.output.record,
        snakemake.output.figure,
    )
