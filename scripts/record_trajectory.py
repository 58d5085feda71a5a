"""Snakemake adapter: x̂0 at every DDIM step of the generated samples (Journey-TRAK)."""

from diffattr.jobs import job_logging
from diffattr.methods.journey import record_trajectory_job

p = snakemake.params
with job_logging(snakemake.log[0], snakemake.threads) as log:
    record_trajectory_job(
        snakemake.input.model,
        snakemake.input.samples,
        snakemake.output.trajectory,
        snakemake.config["generation"]["batch_size"],  # performance only: not a param
        p.device,
        progress=log,
    )
