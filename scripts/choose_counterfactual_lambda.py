"""Snakemake adapter: the held-out λ of one scored method on the gen split."""

from diffattr.jobs.common import delegate_to_job_server

delegate_to_job_server(snakemake)

from diffattr.jobs.common import job_logging
from diffattr.jobs.counterfactual import choose_counterfactual_lambda
from diffattr.jobs.lds import HeldoutChoice
from diffattr.settings import CounterfactualLambdaSettings

with job_logging(snakemake.log[0], snakemake.threads):
    choose_counterfactual_lambda(
        snakemake.input.scores,
        HeldoutChoice.from_inputs(snakemake.input),
        snakemake.output.choice,
        list(snakemake.input.get("train", [])),
        settings=CounterfactualLambdaSettings.from_params(snakemake.params),
    )
