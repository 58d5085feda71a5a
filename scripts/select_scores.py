"""Snakemake adapter: the score file of a method with a ridge λ, at its held-out λ."""

from diffattr.jobs.common import delegate_to_job_server

delegate_to_job_server(snakemake)

from diffattr.jobs.common import job_logging
from diffattr.jobs.lds import HeldoutChoice
from diffattr.jobs.scores import select_scores
from diffattr.settings import ScoreGridSettings

p = snakemake.params
with job_logging(snakemake.log[0], snakemake.threads):
    select_scores(
        snakemake.input.spectra,
        HeldoutChoice.from_inputs(snakemake.input),
        snakemake.output.scores,
        split=p.split,
        grid=ScoreGridSettings.from_params(p),
        train_paths=list(snakemake.input.get("train", [])),
    )
