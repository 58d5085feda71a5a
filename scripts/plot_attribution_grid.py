"""Snakemake adapter: proponent / opponent grid of a few queries at the held-out λ."""

from diffattr.jobs.common import delegate_to_job_server

delegate_to_job_server(snakemake)

from diffattr.jobs.common import job_logging
from diffattr.jobs.report import plot_attribution_grid
from diffattr.settings import AttributionGridSettings

with job_logging(snakemake.log[0], snakemake.threads):
    plot_attribution_grid(
        snakemake.input.scores,
        snakemake.input.lds,
        snakemake.input.dataset,
        snakemake.input.samples,
        snakemake.output.grid,
        settings=AttributionGridSettings.from_params(snakemake.params),
    )
