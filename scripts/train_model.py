"""Snakemake adapter: train the main model or one subset model (resumable)."""

from diffattr.jobs import job_logging, train_job

p = snakemake.params
with job_logging(snakemake.log[0], snakemake.threads) as log:
    train_job(
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
