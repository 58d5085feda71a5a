"""Snakemake adapter: concatenate train feature shards in row order."""

from diffattr.jobs.common import delegate_to_job_server

delegate_to_job_server(snakemake)

from diffattr.jobs.common import job_logging
from diffattr.jobs.features import merge_train_features

with job_logging(snakemake.log[0], snakemake.threads):
    merge_train_features(list(snakemake.input.shards), snakemake.output.features)
