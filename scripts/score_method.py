"""Snakemake adapter: the scores of one (method, K, query split), by the method's kind."""

from diffattr.jobs.common import job_logging
from diffattr.jobs.scores import score_method
from diffattr.settings import Runtime

p = snakemake.params
runtime = Runtime.from_snakemake(snakemake, "features")
with job_logging(snakemake.log[0], runtime.threads) as log:
    score_method(
        p.kind,
        p.params,
        dict(snakemake.input.items()),
        snakemake.output.scores,
        p.method,
        p.K,
        p.split,
        p.lambdas,
        p.chunk_rows,
        progress=log,
        settings={**p.settings, "batch_size": runtime.batch_size},
    )
