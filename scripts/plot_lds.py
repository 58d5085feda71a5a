"""Snakemake adapter: LDS bar chart and LDS-vs-λ curves of the experiment."""

from diffattr.jobs.common import delegate_to_job_server

delegate_to_job_server(snakemake)

from diffattr.jobs.common import job_logging
from diffattr.jobs.report import plot_lds

with job_logging(snakemake.log[0], snakemake.threads):
    plot_lds(
        list(snakemake.input.lds),
        snakemake.output.bars,
        snakemake.output.curves,
        labels=snakemake.params.labels,
    )
