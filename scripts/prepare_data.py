"""Snakemake adapter: build the train/val splits file."""

from diffattr.jobs.common import delegate_to_job_server

delegate_to_job_server(snakemake)

from diffattr.jobs.common import job_logging
from diffattr.jobs.data import prepare_data

with job_logging(snakemake.log[0], snakemake.threads):
    prepare_data(snakemake.output.dataset, data_cfg=snakemake.params.data)
