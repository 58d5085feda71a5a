"""Snakemake adapter: record the generated images the counterfactual evaluation explains."""

from diffattr.counterfactual_jobs import select_targets_job
from diffattr.jobs import job_logging

p = snakemake.params
with job_logging(snakemake.log[0], snakemake.threads):
    select_targets_job(
        snakemake.input.samples,
        snakemake.output.targets,
        p.num_targets,
        p.target_seed,
        planned=p.planned,
    )
