"""Snakemake adapter: regenerate one target with its retrained model from the same noise."""

from diffattr.jobs.common import delegate_to_job_server

delegate_to_job_server(snakemake)

from diffattr.jobs.common import job_logging
from diffattr.jobs.counterfactual import regenerate_counterfactual
from diffattr.settings import Runtime

p = snakemake.params
runtime = Runtime.from_snakemake(snakemake, "generation")
with job_logging(snakemake.log[0], runtime.threads):
    regenerate_counterfactual(
        snakemake.input.model,
        snakemake.input.samples,
        snakemake.output.regenerated,
        method=p.method,
        target=p.target,
        runtime=runtime,
    )
