"""Snakemake adapter: the report's front page (held-out LDS table and key figures)."""

from diffattr.jobs.common import delegate_to_job_server

delegate_to_job_server(snakemake)

from diffattr.jobs.common import job_logging
from diffattr.jobs.report import write_overview

i = snakemake.input
figures = {"samples": i.samples}
if len(i.quality):
    figures["sample-quality"] = i.quality[0]
figures.update({"lds-chart": i.bars, "proponent-grid": i.grid, "class-agreement": i.agreement})
figures["lambda-curves"] = i.curves
if len(i.counterfactual):
    figures["counterfactual-grid"] = i.counterfactual[0]
with job_logging(snakemake.log[0], snakemake.threads):
    write_overview(
        i.summary,
        figures,
        snakemake.output.page,
        experiment=snakemake.params.experiment,
        findings_path=i.findings,
    )
