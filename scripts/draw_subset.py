"""Snakemake adapter: draw subset k of a pool."""

from diffattr.jobs.common import delegate_to_job_server

delegate_to_job_server(snakemake)

from diffattr.jobs.common import job_logging
from diffattr.jobs.data import draw_subset
from diffattr.settings import SubsetSettings

with job_logging(snakemake.log[0], snakemake.threads):
    draw_subset(
        snakemake.input.dataset,
        snakemake.output.subset,
        settings=SubsetSettings.from_params(snakemake.params),
    )
