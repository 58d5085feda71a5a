"""Snakemake adapter: the validated configuration as an HTML page for the report."""

from diffattr.jobs import job_logging
from diffattr.report import config_job

with job_logging(snakemake.log[0], snakemake.threads):
    config_job(snakemake.params.config, snakemake.output.page)
