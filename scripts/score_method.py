"""Snakemake adapter: the scores of one (method, K, query split), by the method's kind."""

from diffattr.jobs.common import delegate_to_job_server

delegate_to_job_server(snakemake)

from diffattr.jobs.common import job_logging
from diffattr.jobs.scores import score_method
from diffattr.settings import Runtime, ScoreSettings

runtime = Runtime.from_snakemake(snakemake, "features")
with job_logging(snakemake.log[0], runtime.threads) as log:
    score_method(
        dict(snakemake.input.items()),
        snakemake.output.scores,
        settings=ScoreSettings.from_params(snakemake.params),
        runtime=runtime.logging_to(log),
    )
