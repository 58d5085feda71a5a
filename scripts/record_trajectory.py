"""Snakemake adapter: x̂0 at every DDIM step of the generated samples (Journey-TRAK)."""

from diffattr.jobs.common import job_logging
from diffattr.jobs.features import record_trajectory

p = snakemake.params
with job_logging(snakemake.log[0], snakemake.threads) as log:
    record_trajectory(
        snakemake.input.model,
        snakemake.input.samples,
        snakemake.output.trajectory,
        snakemake.config["generation"]["batch_size"],  # performance only: not a param
        p.device,
        progress=log,
    )
