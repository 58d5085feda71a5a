"""Snakemake adapter: l2 / SSIM / CLIP between a target and its regeneration."""

from diffattr.jobs.common import job_logging
from diffattr.jobs.counterfactual import compare_counterfactual

p = snakemake.params
with job_logging(snakemake.log[0], snakemake.threads):
    compare_counterfactual(
        snakemake.input.samples,
        snakemake.input.regenerated,
        snakemake.output.metrics,
        p.metrics,
        p.clip_weights,
        p.device,
        latent_model_dir=snakemake.input.get("latent_model"),
    )
