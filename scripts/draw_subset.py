"""Snakemake adapter: draw subset k of a pool."""

from diffattr.jobs import draw_subset_job, job_logging

p = snakemake.params
with job_logging(snakemake.log[0], snakemake.threads):
    draw_subset_job(
        snakemake.input.dataset,
        snakemake.output.subset,
        p.pool,
        p.k,
        p.alpha,
        p.pool_seed,
        p.stratify,
    )
