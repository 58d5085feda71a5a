"""Snakemake adapter: concatenate train feature shards in row order."""

from diffattr.jobs import job_logging, merge_features_job

with job_logging(snakemake.log[0], snakemake.threads):
    merge_features_job(list(snakemake.input.shards), snakemake.output.features)
