"""Snakemake adapter: TRAK scores for the whole λ grid from one factorisation."""

from diffattr.jobs import job_logging, score_job

p = snakemake.params
with job_logging(snakemake.log[0], snakemake.threads):
    score_job(
        snakemake.input.train,
        snakemake.input.test,
        snakemake.output.scores,
        p.lambdas,
        p.chunk_rows,
        p.method,
        p.split,
    )
