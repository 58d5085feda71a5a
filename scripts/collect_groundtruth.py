"""Snakemake adapter: masks and measured outputs of one subset pool."""

from diffattr.jobs.common import delegate_to_job_server

delegate_to_job_server(snakemake)

from diffattr.jobs.common import job_logging
from diffattr.jobs.lds import collect_groundtruth

p = snakemake.params
with job_logging(snakemake.log[0], snakemake.threads):
    collect_groundtruth(
        snakemake.input.dataset,
        list(snakemake.input.subsets),
        p.measured_by_seed,
        snakemake.output.groundtruth,
        pool=p.pool,
        splits=p.splits,
    )
