"""Snakemake adapter: per-method statistics and paired comparisons of the counterfactuals."""

from diffattr.jobs.common import job_logging
from diffattr.jobs.counterfactual import collect_counterfactual

with job_logging(snakemake.log[0], snakemake.threads):
    collect_counterfactual(
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
