"""Snakemake adapter: score matrices at every λ of the grid (scoring.write_all_lambdas)."""

from diffattr.jobs import job_logging, score_grid_job

p = snakemake.params
with job_logging(snakemake.log[0], snakemake.threads):
    score_grid_job(
        snakemake.input.spectra,
        snakemake.output.scores,
        p.lambdas,
        p.chunk_rows,
        list(snakemake.input.get("train", [])),
    )
