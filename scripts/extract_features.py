"""Snakemake adapter: projected gradient features of one split (or train shard)."""

from diffattr.jobs.common import delegate_to_job_server

delegate_to_job_server(snakemake)

from diffattr.jobs.common import job_logging
from diffattr.jobs.features import extract_features
from diffattr.settings import FeatureSettings, Runtime, SplitRows

p = snakemake.params
runtime = Runtime.from_snakemake(snakemake, "features")
with job_logging(snakemake.log[0], runtime.threads) as log:
    extract_features(
        snakemake.input.model,
        snakemake.input.dataset,
        snakemake.output.features,
        rows=SplitRows.from_params(p, samples_path=snakemake.input.get("samples")),
        settings=FeatureSettings.from_params(p),
        runtime=runtime.logging_to(log),
    )
