"""Snakemake adapter: kronfluence (EK-FAC) factors of the main model."""

from diffattr.jobs.common import delegate_to_job_server

delegate_to_job_server(snakemake)

from diffattr.jobs.common import job_logging
from diffattr.jobs.residuals import fit_ekfac_factors
from diffattr.settings import EkfacFactorSettings, Runtime

runtime = Runtime.from_snakemake(snakemake, "features")
with job_logging(snakemake.log[0], runtime.threads) as log:
    fit_ekfac_factors(
        snakemake.input.model,
        snakemake.input.dataset,
        snakemake.output.factors,
        settings=EkfacFactorSettings.from_params(snakemake.params),
        runtime=runtime.logging_to(log),
    )
