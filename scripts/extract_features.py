"""Snakemake adapter: projected gradient features of one split (or train shard)."""

from diffattr.jobs.common import job_logging
from diffattr.jobs.features import extract_features

p = snakemake.params
with job_logging(snakemake.log[0], snakemake.threads) as log:
    extract_features(
        snakemake.input.model,
        snakemake.input.dataset,
        snakemake.input.get("samples"),
        snakemake.output.features,
        p.split,
        p.output_fn,
        p.K,
        p.t_strategy,
        p.proj_kind,
        p.proj_dim,
        p.proj_seed,
        p.noise_seed,
        snakemake.config["features"]["batch_size"],  # performance only: not a param
        p.device,
        shard=p.shard,
        num_shards=p.num_shards,
        projection=p.projection,
        allocation=p.proj_allocation,
        progress=log,
        noise=p.noise,
        noise_batch_size=p.noise_geometry["batch_size"],
        noise_shard_rows=p.noise_geometry["shard_rows"],
    )
