"""Snakemake adapter: build the train/val splits file."""

from diffattr.jobs import job_logging, prepare_data_job

with job_logging(snakemake.log[0], snakemake.threads):
    prepare_data_job(snakemake.params.data, snakemake.output.dataset)
