"""Snakemake adapter: top-k proponent class agreement of every scored method."""

from diffattr.attribution_sanity import sanity_job
from diffattr.jobs import job_logging

i = snakemake.input
with job_logging(snakemake.log[0], snakemake.threads):
    sanity_job(
        list(i.scores),
        list(i.lds),
        snakemake.params.labels,
        i.dataset,
        i.quality[0] if len(i.quality) else None,
        snakemake.output.record,
        snakemake.output.figure,
        snakemake.params.top,
    )
