"""Snakemake adapter: proponent / opponent grid of a few queries at the held-out λ."""

from diffattr.jobs import job_logging
from diffattr.report import attribution_grid_job

p = snakemake.params
with job_logging(snakemake.log[0], snakemake.threads):
    attribution_grid_job(
        snakemake.input.scores,
        snakemake.input.lds,
        snakemake.input.dataset,
        snakemake.input.samples,
        snakemake.output.grid,
        p.split,
        p.queries,
        p.proponents,
        p.opponents,
        p.label,
    )
