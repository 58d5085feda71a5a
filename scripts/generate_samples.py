"""Snakemake adapter: generate the seeded DDIM query set."""

from diffattr.jobs.common import delegate_to_job_server

delegate_to_job_server(snakemake)

from diffattr.jobs.common import job_logging
from diffattr.jobs.generate import generate_samples
from diffattr.settings import GenerationSettings, Runtime

runtime = Runtime.from_snakemake(snakemake, "generation")
with job_logging(snakemake.log[0], runtime.threads) as log:
    generate_samples(
        snakemake.input.model,
        snakemake.input.dataset,
        snakemake.output.samples,
        snakemake.output.grid,
        settings=GenerationSettings.from_params(snakemake.params),
        runtime=runtime.logging_to(log),
    )
