"""Snakemake adapter: LDS curve, held-out and oracle λ, bootstrap."""

from diffattr.jobs import job_logging, lds_job

p = snakemake.params
with job_logging(snakemake.log[0], snakemake.threads):
    lds_job(
        snakemake.input.scores,
        snakemake.input.groundtruth,
        snakemake.input.heldout,
        snakemake.output.lds,
        p.split,
        p.bootstrap_resamples,
        p.bootstrap_seed,
        lambdas=p.lambdas,
        train_paths=list(snakemake.input.get("train", [])),
    )
