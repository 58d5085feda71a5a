"""Snakemake adapter: CLIP image embeddings of one split (transformers CLIP, diffattr.clip)."""

from diffattr.jobs.common import job_logging
from diffattr.jobs.features import embed_clip

p = snakemake.params
with job_logging(snakemake.log[0], snakemake.threads) as log:
    embed_clip(
        snakemake.input.dataset,
        snakemake.input.samples,
        snakemake.output.features,
        p.split,
        p.weights,
        snakemake.config["clip"]["batch_size"],  # performance only: not a param
        p.device,
        progress=log,
    )
