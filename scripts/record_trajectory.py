"""Snakemake adapter: x̂0 at every DDIM step of the generated samples (Journey-TRAK)."""

from diffattr.jobs.common import delegate_to_job_server

delegate_to_job_server(snakemake)

from diffattr.jobs.common import job_logging
from diffattr.jobs.features import record_trajectory
from diffattr.settings import Runtime

runtime = Runtime.from_snakemake(snakemake, "generation")
with job_logging(snakemake.log[0], runtime.threads) as log:
    record_trajectory(
        snakemake.input.model,
        snakemake.input.samples,
        snakemake.output.trajectory,
        runtime=runtime.logging_to(log),
    )
