"""Snakemake adapter: originals beside each method's regeneration and removed examples."""

from diffattr.jobs.common import delegate_to_job_server

delegate_to_job_server(snakemake)

from diffattr.jobs.common import job_logging
from diffattr.jobs.counterfactual import CaseFiles, plot_counterfactual
from diffattr.settings import CounterfactualFigureSettings

i = snakemake.input
with job_logging(snakemake.log[0], snakemake.threads):
    plot_counterfactual(
        i.samples,
        i.dataset,
        CaseFiles(
            metrics=list(i.metrics), removals=list(i.removals), regenerated=list(i.regenerated)
        ),
        snakemake.output.figure,
        settings=CounterfactualFigureSettings.from_params(snakemake.params),
    )
