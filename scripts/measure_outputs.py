"""Snakemake adapter: measured outputs (per-sample loss) of one subset model."""

from diffattr.jobs.common import delegate_to_job_server

delegate_to_job_server(snakemake)

from diffattr.jobs.common import job_logging
from diffattr.jobs.measure import measure_outputs
from diffattr.settings import MeasureSettings, Runtime

runtime = Runtime.from_snakemake(snakemake, "measure")
with job_logging(snakemake.log[0], runtime.threads) as log:
    measure_outputs(
        snakemake.input.model,
        snakemake.input.dataset,
        snakemake.input.samples,
        snakemake.output.measured,
        settings=MeasureSettings.from_params(snakemake.params),
        runtime=runtime.logging_to(log),
    )
