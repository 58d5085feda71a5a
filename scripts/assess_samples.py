"""Snakemake adapter: sample quality (classifier on the real training images) and copy check."""

from diffattr.jobs.common import delegate_to_job_server

delegate_to_job_server(snakemake)

from diffattr.jobs.checks import assess_samples
from diffattr.jobs.common import job_logging

with job_logging(snakemake.log[0], snakemake.threads):
    assess_samples(
        snakemake.input.dataset,
        snakemake.input.samples,
        snakemake.output.record,
        snakemake.output.figure,
    )
