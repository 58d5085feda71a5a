"""Snakemake adapter: masks and measured outputs of one subset pool."""

from diffattr.jobs import groundtruth_job, job_logging

p = snakemake.params
with job_logging(snakemake.log[0], snakemake.threads):
    groundtruth_job(
        snakemake.input.dataset,
        list(snakemake.input.subsets),
        p.measured_by_seed,
        snakemake.output.groundtruth,
        p.pool,
        p.splits,
    )
