"""Snakemake adapter: Journey-TRAK gen features averaged along the sampling trajectory."""

from diffattr.jobs.common import job_logging
from diffattr.jobs.features import extract_trajectory_features

p = snakemake.params
with job_logging(snakemake.log[0], snakemake.threads) as log:
    extract_trajectory_features(
        snakemake.input.model,
        snakemake.input.samples,
        snakemake.input.trajectory,
        snakemake.output.features,
        p.output_fn,
        p.proj_kind,
        p.proj_dim,
        p.proj_seed,
        p.noise_seed,
        snakemake.config["features"]["batch_size"],  # performance only: not a param
        p.device,
        projection=p.projection,
        allocation=p.proj_allocation,
        progress=log,
    )
