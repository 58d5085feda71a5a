"""Snakemake adapter: per-rule runtime table from the experiment's benchmark files."""

from diffattr.jobs import job_logging
from diffattr.report import runtime_table_job

with job_logging(snakemake.log[0], snakemake.threads):
    runtime_table_job(snakemake.params.benchmarks, snakemake.output.table)
