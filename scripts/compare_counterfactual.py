"""Snakemake adapter: l2 / SSIM / CLIP between a target and its regeneration."""

from diffattr.jobs.common import delegate_to_job_server

delegate_to_job_server(snakemake)

from diffattr.jobs.common import job_logging
from diffattr.jobs.counterfactual import compare_counterfactual
from diffattr.settings import CounterfactualMetricSettings, Runtime

runtime = Runtime.from_snakemake(snakemake, "clip")
with job_logging(snakemake.log[0], runtime.threads):
    compare_counterfactual(
        snakemake.input.samples,
        snakemake.input.regenerated,
        snakemake.output.metrics,
        settings=CounterfactualMetricSettings.from_params(snakemake.params),
        runtime=runtime,
        latent_model_dir=snakemake.input.get("latent_model"),
    )
