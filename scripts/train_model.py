"""Snakemake adapter: train the main model or one subset model (resumable)."""

from diffattr.jobs.common import job_logging
from diffattr.jobs.train import train_model

p = snakemake.params
with job_logging(snakemake.log[0], snakemake.threads) as log:
    train_model(
        snakemake.input.dataset,
        snakemake.output.model,
        p.checkpoint_dir,
        p.model,
        p.scheduler,
        p.training,
        p.seed,
        p.device,
        subset_path=snakemake.input.get("subset"),
        progress=log,
    )
