"""Jobs of ``rules/residuals.smk``: the DAS residual weights (:mod:`diffattr.residuals`) and
the EK-FAC factors (:mod:`diffattr.ekfac`) of the main model."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from diffattr.ekfac import DiffusionLoss, SampleDataset, _train_inputs, fit_factors
from diffattr.files import write_residuals
from diffattr.queries import QueryRows
from diffattr.residuals import das_weights, residual_profile
from diffattr.settings import EkfacFactorSettings, ResidualSettings, Runtime


def compute_residuals(
    model_dir: str,
    dataset_path: str,
    out_path: str,
    *,
    settings: ResidualSettings,
    runtime: Runtime,
) -> None:
    """Residual profiles [N, S] and DAS weights of every training image (forward passes only),
    with the training features' noise (``settings.noise``)."""
    from diffattr import features, store
    from diffattr.models import load_diffusion_model, resolve_device
    from diffattr.progress import progress_bar, status
    from diffattr.queries import encoded_queries, load_queries, load_query_captions

    S, noise_seed, batch_size = settings.S, settings.noise_seed, runtime.batch_size
    model = load_diffusion_model(model_dir, resolve_device(runtime.device))
    scheduler = model.scheduler
    steps = features.select_timesteps(int(S), "uniform", scheduler.config.num_train_timesteps)
    images, ids = load_queries("train", dataset_path, None)
    captions = load_query_captions("train", dataset_path, None) if model.conditional else None
    keys = settings.noise_keys(ids)
    residuals = np.empty((len(ids), len(steps)), dtype=np.float64)
    update, close = progress_bar(runtime.progress, len(ids), "residuals", unit="sample")
    try:
        for rows, x0, cond in encoded_queries(model, images, captions, batch_size):
            chunk_ids = ids[rows]
            x0 = torch.as_tensor(np.asarray(x0))
            for start in range(0, len(chunk_ids), batch_size):
                stop = min(start + batch_size, len(chunk_ids))
                batch = QueryRows(
                    x0[start:stop],
                    chunk_ids[start:stop],
                    None if cond is None else cond[start:stop],
                    noise_keys=keys[rows][start:stop],
                )
                residuals[rows.start + start : rows.start + stop] = residual_profile(
                    model.denoiser, scheduler, batch, steps, noise_seed
                ).numpy()
                update(rows.start + stop)
    finally:
        close()
    attrs = {
        "model_digest": store.digest_directory(model_dir),
        "noise_seed": int(noise_seed),
        **settings.noise_attrs(),
        "timesteps": steps,
        "S": int(S),
        "n_rows": len(ids),
    }
    write_residuals(out_path, residuals, das_weights(residuals), ids, steps, attrs)
    status("residuals [%d x %d]", *residuals.shape)


def fit_ekfac_factors(
    model_dir: str,
    dataset_path: str,
    out_dir: str,
    *,
    settings: EkfacFactorSettings,
    runtime: Runtime,
) -> dict[str, Any]:
    """The factors of the main model: every training image at ``settings.factor_timesteps``
    uniform timesteps, each (image, t) one example (forward + backward passes, no scores), with
    the training features' noise (``settings``)."""
    from diffattr import features, store
    from diffattr.models import load_diffusion_model, resolve_device
    from diffattr.progress import status

    model = load_diffusion_model(model_dir, resolve_device(runtime.device))
    scheduler = model.scheduler
    steps = features.select_timesteps(
        int(settings.factor_timesteps), "uniform", scheduler.config.num_train_timesteps
    )
    x0, ids, cond = _train_inputs(model, dataset_path, runtime.batch_size)
    dataset = SampleDataset(x0, ids, cond, timesteps=steps, noise_keys=settings.noise_keys(ids))
    provenance = fit_factors(
        model.denoiser,
        DiffusionLoss(scheduler, settings.noise_seed, runtime.batch_size),
        dataset,
        out_dir,
        settings.strategy,
        {
            "model_digest": store.digest_directory(model_dir),
            "factor_timesteps": steps,
            "n_train": len(ids),
            **settings.noise_attrs(),
        },
    )
    status(
        "%s factors of %d modules (%d parameters; %d uncovered), peak RSS %.0f MB",
        settings.strategy,
        len(provenance["tracked_modules"]),
        provenance["covered_parameters"],
        provenance["uncovered_parameters"],
        provenance["peak_rss_mb"],
    )
    return provenance
