"""Snakemake adapter: summary.csv and summary.md of the experiment."""

from diffattr.jobs.common import job_logging
from diffattr.jobs.summary import summarize

p = snakemake.params
with job_logging(snakemake.log[0], snakemake.threads):
    summarize(
        list(snakemake.input.lds),
        snakemake.input.ceiling,
        snakemake.output.csv,
        snakemake.output.md,
        p.experiment,
        counterfactual_path=snakemake.input.get("counterfactual") or None,
        counterfactual_csv_path=snakemake.output.get("counterfactual"),
        groundtruth_path=snakemake.input.groundtruth,
        paired_csv_path=snakemake.output.paired,
        pairs=p.pairs,
        paired_resamples=p.paired_resamples,
        paired_seed=p.paired_seed,
    )
