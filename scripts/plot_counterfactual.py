"""Snakemake adapter: originals beside each method's regeneration and removed examples."""

from diffattr.jobs.common import job_logging
from diffattr.jobs.counterfactual import plot_counterfactual

p = snakemake.params
with job_logging(snakemake.log[0], snakemake.threads):
    plot_counterfactual(
        snakemake.input.samples,
        snakemake.input.dataset,
        list(snakemake.input.regenerated),
        list(snakemake.input.removals),
        list(snakemake.input.metrics),
        snakemake.output.figure,
        p.methods,
        p.figure_removed,
    )
