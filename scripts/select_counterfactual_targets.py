"""Snakemake adapter: record the generated images the counterfactual evaluation explains."""

from diffattr.jobs.common import delegate_to_job_server

delegate_to_job_server(snakemake)

from diffattr.jobs.common import job_logging
from diffattr.jobs.counterfactual import select_counterfactual_targets

p = snakemake.params
with job_logging(snakemake.log[0], snakemake.threads):
    select_counterfactual_targets(
        snakemake.input.samples,
        snakemake.output.targets,
        num_targets=p.num_targets,
        target_seed=p.target_seed,
        planned=p.planned,
    )
