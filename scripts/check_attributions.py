"""Snakemake adapter: top-k proponent class agreement of every scored method."""

from diffattr.jobs.checks import check_attributions
from diffattr.jobs.common import job_logging

i = snakemake.input
with job_logging(snakemake.log[0], snakemake.threads):
    check_attributions(
        list(i.scores),
        list(i.lds),
        snakemake.params.labels,
        i.dataset,
        i.quality[0] if len(i.quality) else None,
        snakemake.output.record,
        snakemake.output.figure,
        snakemake.params.top,
    )
