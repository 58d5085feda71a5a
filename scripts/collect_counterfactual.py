"""Snakemake adapter: per-method statistics and paired comparisons of the counterfactuals."""

from diffattr.counterfactual_jobs import collect_job
from diffattr.jobs import job_logging

with job_logging(snakemake.log[0], snakemake.threads):
    collect_job(
        snakemake.input.targets,
        list(snakemake.input.metrics),
        list(snakemake.input.removals),
        list(snakemake.input.choices),
        list(snakemake.input.lds),
        snakemake.params.methods,
        snakemake.output.table,
        snakemake.output.paired,
        snakemake.output.summary,
    )
