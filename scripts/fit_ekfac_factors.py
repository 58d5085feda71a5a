"""Snakemake adapter: kronfluence (EK-FAC) factors of the main model."""

from diffattr.jobs.common import job_logging
from diffattr.jobs.residuals import fit_ekfac_factors
from diffattr.settings import Runtime

p = snakemake.params
runtime = Runtime.from_snakemake(snakemake, "features")
with job_logging(snakemake.log[0], runtime.threads):
    fit_ekfac_factors(
        snakemake.input.model,
        snakemake.input.dataset,
        snakemake.output.factors,
        p.T,
        p.strategy,
        p.noise_seed,
        runtime.batch_size,  # performance only: not a param
        runtime.device,
        noise=p.noise,
        noise_batch_size=p.noise_geometry["batch_size"],
        noise_shard_rows=p.noise_geometry["shard_rows"],
    )
