"""Snakemake adapter: LDS curve, held-out and oracle λ, bootstrap."""

from diffattr.jobs.common import delegate_to_job_server

delegate_to_job_server(snakemake)

from diffattr.jobs.common import job_logging
from diffattr.jobs.lds import HeldoutChoice, evaluate_lds
from diffattr.settings import LdsSettings

with job_logging(snakemake.log[0], snakemake.threads):
    evaluate_lds(
        snakemake.input.scores,
        snakemake.input.groundtruth,
        HeldoutChoice.from_inputs(snakemake.input),
        snakemake.output.lds,
        settings=LdsSettings.from_params(snakemake.params),
        train_paths=list(snakemake.input.get("train", [])),
    )
