"""Snakemake adapter: regenerate one target with its retrained model from the same noise."""

from diffattr.counterfactual_jobs import regenerate_job
from diffattr.jobs import job_logging

p = snakemake.params
with job_logging(snakemake.log[0], snakemake.threads):
    regenerate_job(
        snakemake.input.model,
        snakemake.input.samples,
        snakemake.output.regenerated,
        p.method,
        p.target,
        snakemake.config["generation"]["batch_size"],  # performance only: not a param
        p.device,
    )
