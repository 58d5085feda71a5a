"""Snakemake adapter: generate the seeded DDIM query set."""

from diffattr.jobs.common import job_logging
from diffattr.jobs.generate import generate_samples

p = snakemake.params
with job_logging(snakemake.log[0], snakemake.threads) as log:
    generate_samples(
        snakemake.input.model,
        snakemake.output.samples,
        snakemake.output.grid,
        p.num_samples,
        p.steps,
        p.eta,
        p.seed,
        snakemake.config["generation"]["batch_size"],  # performance only: not a param
        p.grid_columns,
        p.device,
        progress=log,
        dataset_path=snakemake.input.dataset,
        guidance_scale=p.guidance_scale,
        prompts=p.prompts,
    )
