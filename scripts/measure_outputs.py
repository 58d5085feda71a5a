"""Snakemake adapter: measured outputs (per-sample loss) of one subset model."""

from diffattr.jobs.common import job_logging
from diffattr.jobs.measure import measure_outputs

p = snakemake.params
with job_logging(snakemake.log[0], snakemake.threads) as log:
    measure_outputs(
        snakemake.input.model,
        snakemake.input.dataset,
        snakemake.input.samples,
        snakemake.output.measured,
        p.splits,
        p.timesteps,
        p.noise_seeds,
        snakemake.config["measure"]["batch_size"],  # performance only: not a param
        p.device,
        progress=log,
    )
