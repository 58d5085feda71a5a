"""Snakemake adapter: CLIP image embeddings of one split (transformers CLIP, diffattr.clip)."""

from diffattr.jobs.common import delegate_to_job_server

delegate_to_job_server(snakemake)

from diffattr.jobs.common import job_logging
from diffattr.jobs.features import embed_clip
from diffattr.settings import Runtime

p = snakemake.params
runtime = Runtime.from_snakemake(snakemake, "clip")
with job_logging(snakemake.log[0], runtime.threads) as log:
    embed_clip(
        snakemake.input.dataset,
        snakemake.input.samples,
        snakemake.output.features,
        split=p.split,
        weights=p.weights,
        runtime=runtime.logging_to(log),
    )
