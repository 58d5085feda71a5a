"""Snakemake adapter: DAS's residual profiles and weights of the training set."""

from diffattr.jobs.common import delegate_to_job_server

delegate_to_job_server(snakemake)

from diffattr.jobs.common import job_logging
from diffattr.jobs.residuals import compute_residuals
from diffattr.settings import ResidualSettings, Runtime

runtime = Runtime.from_snakemake(snakemake, "features")
with job_logging(snakemake.log[0], runtime.threads) as log:
    compute_residuals(
        snakemake.input.model,
        snakemake.input.dataset,
        snakemake.output.residuals,
        settings=ResidualSettings.from_params(snakemake.params),
        runtime=runtime.logging_to(log),
    )
