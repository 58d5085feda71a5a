"""Snakemake adapter: one target's removal set (top-k training rows) for one method."""

from diffattr.jobs.common import delegate_to_job_server

delegate_to_job_server(snakemake)

from diffattr.jobs.common import job_logging
from diffattr.jobs.counterfactual import remove_top_examples
from diffattr.settings import RemovalSettings

with job_logging(snakemake.log[0], snakemake.threads):
    remove_top_examples(
        snakemake.input.dataset,
        snakemake.output.removal,
        settings=RemovalSettings.from_params(snakemake.params),
        scores_path=snakemake.input.get("scores"),
        lambda_path=snakemake.input.get("choice"),
    )
