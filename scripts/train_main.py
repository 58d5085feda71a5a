"""Snakemake adapter: train the main model (resumable) and save its 25/50/75% snapshots."""

from diffattr.jobs.common import job_logging
from diffattr.jobs.train import train_main

p = snakemake.params
with job_logging(snakemake.log[0], snakemake.threads) as log:
    train_main(
        snakemake.input.dataset,
        snakemake.output.model,
        list(snakemake.output.snapshots),
        p.snapshot_steps,
        p.snapshot_staging,
        p.checkpoint_dir,
        p.model,
        p.scheduler,
        p.training,
        p.seed,
        p.device,
        progress=log,
    )
