"""Snakemake adapter: draw subset k of a pool."""

from diffattr.jobs.common import job_logging
from diffattr.jobs.data import draw_subset

p = snakemake.params
with job_logging(snakemake.log[0], snakemake.threads):
    draw_subset(
        snakemake.input.dataset,
        snakemake.output.subset,
        p.pool,
        p.k,
        p.alpha,
        p.pool_seed,
        p.stratify,
    )
