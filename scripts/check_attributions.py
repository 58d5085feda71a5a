"""Snakemake adapter: top-k proponent class agreement of every scored method."""

from diffattr.jobs.common import delegate_to_job_server

delegate_to_job_server(snakemake)

from diffattr.jobs.checks import RecordAndFigure, check_attributions
from diffattr.jobs.common import job_logging
from diffattr.settings import AgreementSettings

i, o = snakemake.input, snakemake.output
with job_logging(snakemake.log[0], snakemake.threads):
    check_attributions(
        list(i.scores),
        list(i.lds),
        i.dataset,
        i.quality[0] if len(i.quality) else None,
        out=RecordAndFigure(record=o.record, figure=o.figure),
        settings=AgreementSettings.from_params(snakemake.params),
    )
