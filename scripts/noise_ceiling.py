"""Snakemake adapter: seed-to-seed noise ceiling of the benchmark."""

from diffattr.jobs.common import delegate_to_job_server

delegate_to_job_server(snakemake)

from diffattr.jobs.common import job_logging
from diffattr.jobs.lds import noise_ceiling

with job_logging(snakemake.log[0], snakemake.threads):
    noise_ceiling(
        snakemake.input.groundtruth, snakemake.output.ceiling, splits=snakemake.params.splits
    )
