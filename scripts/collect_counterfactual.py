"""Snakemake adapter: per-method statistics and paired comparisons of the counterfactuals."""

from diffattr.jobs.common import delegate_to_job_server

delegate_to_job_server(snakemake)

from diffattr.jobs.common import job_logging
from diffattr.jobs.counterfactual import CaseFiles, CollectedFiles, collect_counterfactual

i, o = snakemake.input, snakemake.output
with job_logging(snakemake.log[0], snakemake.threads):
    collect_counterfactual(
        i.targets,
        CaseFiles(metrics=list(i.metrics), removals=list(i.removals)),
        list(i.choices),
        list(i.lds),
        out=CollectedFiles(metrics=o.table, paired=o.paired, summary=o.summary),
        methods=snakemake.params.methods,
    )
