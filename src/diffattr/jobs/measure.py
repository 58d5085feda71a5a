"""Job of ``rules/measure.smk``: the measured outputs (per-sample losses) of one model."""

from __future__ import annotations

import numpy as np

from diffattr import store
from diffattr.files import write_measured
from diffattr.progress import status
from diffattr.queries import QueryRows, encoded_queries, load_queries, load_query_captions
from diffattr.settings import MeasureSettings, Runtime


def measure_outputs(
    model_dir: str,
    dataset_path: str,
    samples_path: str,
    out_path: str,
    *,
    settings: MeasureSettings,
    runtime: Runtime,
) -> None:
    """Per-sample output (``settings.output``, by default the loss) of one model on every query
    split, averaged over the timestep grid. The datasets keep the name ``loss`` whatever the
    output; the attrs ``output_fn`` (the name) and ``output`` (its description) say which.

    A conditional model is conditioned on each sample's caption (gen: its recorded prompt),
    without guidance; a latent model measures in latent space (x0 = VAE mode).
    """
    from diffattr.measure import Measurement, measure_losses, timestep_grid
    from diffattr.models import load_diffusion_model, resolve_device
    from diffattr.outputs import describe

    splits, noise_seeds, batch_size = settings.splits, settings.noise_seeds, runtime.batch_size
    model = load_diffusion_model(model_dir, resolve_device(runtime.device))
    scheduler = model.scheduler
    grid = timestep_grid(settings.timesteps, scheduler.config.num_train_timesteps)
    per_split: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split in splits:
        images, ids = load_queries(split, dataset_path, samples_path)
        captions = None
        if model.conditional:
            captions = load_query_captions(split, dataset_path, samples_path)
        measurement = Measurement(
            timesteps=grid,
            noise_seeds=list(noise_seeds),
            purpose=f"measure/{split}",
            output_fn=settings.output,
        )
        parts = []
        for rows, x0, cond in encoded_queries(model, images, captions, batch_size):
            parts.append(
                measure_losses(
                    model.denoiser,
                    scheduler,
                    QueryRows(x0, ids[rows], cond),
                    measurement,
                    batch_size=batch_size,
                    progress=runtime.progress,
                )
            )
        per_split[split] = (np.concatenate(parts, axis=1), ids)
    attrs = {
        "model_digest": store.digest_directory(model_dir),
        "model_kind": model.kind,
        "splits": list(splits),
        "timesteps": grid.tolist(),
        "noise_seeds": list(noise_seeds),
        "output": describe(settings.output),
        "output_fn": settings.output,
    }
    if model.uses_latents:
        attrs["space"] = "VAE latent mode x scaling_factor"
    if model.conditional:
        attrs["condition"] = "caption (gen: recorded prompt), no guidance"
    write_measured(out_path, per_split, attrs)
    losses = [f"{split} {per_split[split][0].mean(axis=0).mean():.4g}" for split in splits]
    status("mean loss %s", ", ".join(losses))
