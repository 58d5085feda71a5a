"""Snakemake adapter: LDS bar chart and LDS-vs-λ curves of the experiment."""

from diffattr.jobs import job_logging
from diffattr.report import lds_figures_job

with job_logging(snakemake.log[0], snakemake.threads):
    lds_figures_job(
        list(snakemake.input.lds),
        snakemake.params.labels,
        snakemake.output.bars,
        snakemake.output.curves,
    )
