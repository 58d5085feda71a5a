"""Snakemake adapter: summary.csv and summary.md of the experiment."""

from diffattr.jobs.common import delegate_to_job_server

delegate_to_job_server(snakemake)

from diffattr.jobs.common import job_logging
from diffattr.jobs.summary import SummaryFiles, summarize
from diffattr.settings import SummarySettings

i, o = snakemake.input, snakemake.output
with job_logging(snakemake.log[0], snakemake.threads):
    summarize(
        list(i.lds),
        i.ceiling,
        i.groundtruth,
        i.get("counterfactual") or None,
        out=SummaryFiles(
            csv=o.csv, md=o.md, paired=o.paired, counterfactual=o.get("counterfactual")
        ),
        settings=SummarySettings.from_params(snakemake.params),
    )
