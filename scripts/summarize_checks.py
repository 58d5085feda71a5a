"""Snakemake adapter: what the run found, in plain words (checks.md, the report's first screen)."""

from diffattr.demo_checks import checks_job
from diffattr.jobs import job_logging

i = snakemake.input
with job_logging(snakemake.log[0], snakemake.threads):
    checks_job(
        i.summary,
        i.quality[0] if len(i.quality) else None,
        i.sanity,
        i.counterfactual[0] if len(i.counterfactual) else None,
        snakemake.params.method_kinds,
        snakemake.params.run,
        snakemake.output.md,
        snakemake.output.html,
    )
