"""Snakemake adapter: per-rule runtime table from the experiment's benchmark files."""

from diffattr.jobs.common import delegate_to_job_server

delegate_to_job_server(snakemake)

from diffattr.jobs.common import job_logging
from diffattr.jobs.report import tabulate_runtimes

with job_logging(snakemake.log[0], snakemake.threads):
    tabulate_runtimes(snakemake.params.benchmarks, snakemake.output.table)
