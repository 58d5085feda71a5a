"""Snakemake adapter: score matrices at every λ of the grid (scoring.write_all_lambdas)."""

from diffattr.jobs.common import job_logging
from diffattr.jobs.scores import score_grid

p = snakemake.params
with job_logging(snakemake.log[0], snakemake.threads):
    score_grid(
        snakemake.input.spectra,
        snakemake.output.scores,
        p.lambdas,
        p.chunk_rows,
        list(snakemake.input.get("train", [])),
    )
