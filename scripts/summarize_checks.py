"""Snakemake adapter: what the run found, in plain words (checks.md, the report's first screen)."""

from diffattr.jobs.common import delegate_to_job_server

delegate_to_job_server(snakemake)

from diffattr.jobs.checks import FindingsPages, summarize_checks
from diffattr.jobs.common import job_logging
from diffattr.settings import FindingsSettings

i = snakemake.input
with job_logging(snakemake.log[0], snakemake.threads):
    summarize_checks(
        i.summary,
        i.quality[0] if len(i.quality) else None,
        i.sanity,
        i.counterfactual[0] if len(i.counterfactual) else None,
        out=FindingsPages(md=snakemake.output.md, html=snakemake.output.html),
        settings=FindingsSettings.from_params(snakemake.params),
    )
