"""Snakemake adapter: train the main model (resumable) and save its 25/50/75% snapshots."""

from diffattr.jobs.common import delegate_to_job_server

delegate_to_job_server(snakemake)

from diffattr.jobs.common import job_logging
from diffattr.jobs.train import train_main
from diffattr.settings import TrainingRecipe, TrainingRuntime

p = snakemake.params
runtime = TrainingRuntime.from_snakemake(snakemake)
with job_logging(snakemake.log[0], runtime.threads) as log:
    train_main(
        snakemake.input.dataset,
        snakemake.output.model,
        list(snakemake.output.snapshots),
        snapshot_steps=p.snapshot_steps,
        settings=TrainingRecipe.from_params(p),
        runtime=runtime.logging_to(log),
    )
