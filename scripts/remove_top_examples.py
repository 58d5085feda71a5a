"""Snakemake adapter: one target's removal set (top-k training rows) for one method."""

from diffattr.counterfactual_jobs import removal_job
from diffattr.jobs import job_logging

p = snakemake.params
with job_logging(snakemake.log[0], snakemake.threads):
    removal_job(
        snakemake.input.dataset,
        snakemake.output.removal,
        p.method,
        p.target,
        p.top_k,
        p.top_fraction,
        p.random_seed,
        scores_path=snakemake.input.get("scores"),
        lambda_path=snakemake.input.get("choice"),
    )
