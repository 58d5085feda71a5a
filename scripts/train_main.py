"""Snakemake adapter: train the main model (resumable) and save its 25/50/75% snapshots."""

from diffattr.jobs import job_logging
from diffattr.snapshots import train_main_job

p = snakemake.params
with job_logging(snakemake.log[0], snakemake.threads) as log:
    train_main_job(
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
