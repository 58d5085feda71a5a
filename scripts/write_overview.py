"""Snakemake adapter: the report's front page (held-out LDS table and key figures)."""

from diffattr.jobs import job_logging
from diffattr.report import overview_job

i = snakemake.input
figures = {"lds-chart": i.bars, "lambda-curves": i.curves, "proponent-grid": i.grid}
if len(i.counterfactual):
    figures["counterfactual-grid"] = i.counterfactual[0]
with job_logging(snakemake.log[0], snakemake.threads):
    overview_job(i.summary, figures, snakemake.output.page, snakemake.params.experiment)
