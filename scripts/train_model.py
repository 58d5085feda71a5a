"""Snakemake adapter: train one subset (or counterfactual) model (resumable)."""

from diffattr.jobs.common import delegate_to_job_server

delegate_to_job_server(snakemake)

from diffattr.jobs.common import job_logging
from diffattr.jobs.train import train_model
from diffattr.settings import TrainingRecipe, TrainingRuntime

runtime = TrainingRuntime.from_snakemake(snakemake)
with job_logging(snakemake.log[0], runtime.threads) as log:
    train_model(
        snakemake.input.dataset,
        snakemake.input.get("subset"),
        snakemake.output.model,
        settings=TrainingRecipe.from_params(snakemake.params),
        runtime=runtime.logging_to(log),
    )
