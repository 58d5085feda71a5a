"""Snakemake adapter: the validated configuration as an HTML page for the report."""

from diffattr.jobs.common import delegate_to_job_server

delegate_to_job_server(snakemake)

from diffattr.jobs.common import job_logging
from diffattr.jobs.report import dump_config

with job_logging(snakemake.log[0], snakemake.threads):
    dump_config(snakemake.output.page, config=snakemake.params.config)
