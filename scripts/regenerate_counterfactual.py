"""Snakemake adapter: regenerate one target with its retrained model from the same noise."""

from diffattr.jobs.common import job_logging
from diffattr.jobs.counterfactual import regenerate_counterfactual

p = snakemake.params
with job_logging(snakemake.log[0], snakemake.threads):
    regenerate_counterfactual(
        snakemake.input.model,
        snakemake.input.samples,
        snakemake.output.regenerated,
        p.method,
        p.target,
        snakemake.config["generation"]["batch_size"],  # performance only: not a param
        p.device,
    )
