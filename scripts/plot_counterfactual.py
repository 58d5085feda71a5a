"""Snakemake adapter: originals beside each method's regeneration and removed examples."""

from diffattr.counterfactual_jobs import plot_job
from diffattr.jobs import job_logging

p = snakemake.params
with job_logging(snakemake.log[0], snakemake.threads):
    plot_job(
        snakemake.input.samples,
        snakemake.input.dataset,
        list(snakemake.input.regenerated),
        list(snakemake.input.removals),
        list(snakemake.input.metrics),
        snakemake.output.figure,
        p.methods,
        p.figure_removed,
    )
