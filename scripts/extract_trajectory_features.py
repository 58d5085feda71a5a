"""Snakemake adapter: Journey-TRAK gen features averaged along the sampling trajectory."""

from diffattr.jobs.common import delegate_to_job_server

delegate_to_job_server(snakemake)

from diffattr.jobs.common import job_logging
from diffattr.jobs.features import TrajectoryInputs, extract_trajectory_features
from diffattr.settings import Runtime, TrajectoryFeatureSettings

runtime = Runtime.from_snakemake(snakemake, "features")
with job_logging(snakemake.log[0], runtime.threads) as log:
    extract_trajectory_features(
        TrajectoryInputs(
            model_dir=snakemake.input.model,
            dataset_path=snakemake.input.dataset,
            samples_path=snakemake.input.samples,
            trajectory_path=snakemake.input.trajectory,
        ),
        snakemake.output.features,
        settings=TrajectoryFeatureSettings.from_params(snakemake.params),
        runtime=runtime.logging_to(log),
    )
