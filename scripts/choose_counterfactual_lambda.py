"""Snakemake adapter: the held-out λ of one scored method on the gen split."""

from diffattr.counterfactual_jobs import choose_lambda_job
from diffattr.jobs import job_logging

p = snakemake.params
with job_logging(snakemake.log[0], snakemake.threads):
    choose_lambda_job(
        snakemake.input.scores,
        snakemake.input.heldout,
        snakemake.output.choice,
        p.method,
        p.K,
        p.lambdas,
        list(snakemake.input.get("train", [])),
    )
