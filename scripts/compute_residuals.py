"""Snakemake adapter: DAS's residual profiles and weights of the training set."""

from diffattr.jobs.common import job_logging
from diffattr.jobs.residuals import compute_residuals
from diffattr.settings import Runtime

p = snakemake.params
runtime = Runtime.from_snakemake(snakemake, "features")
with job_logging(snakemake.log[0], runtime.threads) as log:
    compute_residuals(
        snakemake.input.model,
        snakemake.input.dataset,
        snakemake.output.residuals,
        p.S,
        p.noise_seed,
        runtime.batch_size,  # performance only: not a param
        runtime.device,
        progress=log,
        noise=p.noise,
        noise_batch_size=p.noise_geometry["batch_size"],
        noise_shard_rows=p.noise_geometry["shard_rows"],
    )
