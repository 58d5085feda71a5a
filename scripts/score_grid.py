"""Snakemake adapter: score matrices at every λ of the grid (scoring.write_all_lambdas)."""

from diffattr.jobs.common import delegate_to_job_server

delegate_to_job_server(snakemake)

from diffattr.jobs.common import job_logging
from diffattr.jobs.scores import score_grid
from diffattr.settings import ScoreGridSettings

with job_logging(snakemake.log[0], snakemake.threads):
    score_grid(
        snakemake.input.spectra,
        snakemake.output.scores,
        grid=ScoreGridSettings.from_params(snakemake.params),
        train_paths=list(snakemake.input.get("train", [])),
    )
