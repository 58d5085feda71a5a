"""Journey-TRAK: query features along the sampling trajectory (protocol §4.1, ``09_workshop``).

A simplified "The Journey, Not the Destination" (Georgiev et al. 2023), for generated samples only:

1. :func:`record_trajectory_job` re-runs the seeded DDIM generation of ``samples/gen.h5`` with
   the main model and stores the predicted clean sample x̂0 of every step (clamped to [-1, 1])
   with the step's timestep t_i. It checks that the final images equal the stored ones.
2. :func:`trajectory_features_job` takes, for each step i, x̂0_i as the clean sample at t_i with
   fresh keyed noise (:func:`diffattr.noise.sample_noise`, as for every feature; always the
   ``independent`` scheme on the ``gen`` split, since the trajectory's timesteps are not the
   training features' timesteps, so no draw could be shared with a training row), the gradient
   of f (``loss``) there, averages over the steps and projects once.
3. ``journey_trak`` scores those query features against ordinary TRAK training features of the
   same f at K timesteps with the TRAK kernel over the λ grid (train and query timesteps differ
   by design; projection, f, noise seed and model must match).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO, Any

import numpy as np

from diffattr.errors import FeatureMismatchError
from diffattr.methods.base import Need, features_need, method_noise, register
from diffattr.methods.readout import READOUT_PARAM
from diffattr.methods.trak import OUTPUT_FN_PARAM, TrakKernel

#: What the training features and the trajectory features must share (not the timesteps).
CHECK_KEYS = ("proj_kind", "proj_seed", "proj_dim", "output_fn", "noise_seed", "model_digest")

#: Largest difference between re-generated and stored images before the trajectory is refused.
IMAGE_TOLERANCE = 1e-3


@register
class JourneyTrak(TrakKernel):
    kind = "journey_trak"
    summary = "TRAK with gen features averaged along the DDIM trajectory (gen only)"
    query_splits = ("gen",)
    check_keys = CHECK_KEYS
    # The trajectory features have no per-timestep normalisation (docs/methods.md).
    params = {"output_fn": OUTPUT_FN_PARAM, "readout": READOUT_PARAM}

    def needs(self, params: Mapping[str, Any], K: int, split: str) -> dict[str, list[Need]]:
        fn = params["output_fn"]
        return {
            "train": [features_need("main", fn, K, "train", method_noise(params))],
            "test": [Need("trajectory_features", {"fn": fn})],
        }


def record_trajectory_job(
    model_dir: str,
    samples_path: str,
    out_path: str,
    batch_size: int,
    device: str,
    progress: IO[str] | None = None,
) -> None:
    """Re-run the generation of ``samples_path`` and store x̂0 at every DDIM step.

    Seeds, steps, η, prompts and guidance come from ``samples_path`` itself. x̂0 is clamped
    pixels for a pixel model and unclamped latents for a latent model (protocol §4.1).
    """
    from diffattr import store
    from diffattr.models import load_diffusion_model, resolve_device
    from diffattr.sampling import generate

    with store.open_h5(samples_path) as handle:
        images, seeds, ids = handle["images"][()], handle["seeds"][()], handle["ids"][()]
        prompts = [_text(p) for p in handle["prompts"][()]] if "prompts" in handle else None
        attrs = {k: store.decode_attr(v) for k, v in handle.attrs.items()}
    digest = store.digest_directory(model_dir)
    store.require_attrs(attrs, {"model_digest": digest}, f"{samples_path} vs model {model_dir}")
    model = load_diffusion_model(model_dir, resolve_device(device))
    steps, eta = int(attrs["steps"]), float(attrs["eta"])
    guidance = float(attrs.get("guidance_scale", 1.0))
    result = generate(model, seeds, steps, eta, batch_size, prompts, guidance, progress, True)
    difference = float(np.abs(result["images"] - images).max())
    if difference > IMAGE_TOLERANCE:
        raise FeatureMismatchError(
            f"re-generating {samples_path} with {model_dir} gives images that differ by up to "
            f"{difference:.3g} (> {IMAGE_TOLERANCE}); the trajectory would not be the one that "
            "produced the samples. Regenerate the samples (rule generate_samples)."
        )
    store.write_h5(
        out_path,
        {
            "x0_trajectory": result["x0_trajectory"],
            "timesteps": result["trajectory_timesteps"],
            "ids": ids,
            "seeds": seeds,
        },
        {
            "split": "gen",
            "model_digest": digest,
            "steps": steps,
            "eta": eta,
            "gen_seed": attrs.get("gen_seed"),
            "max_image_difference": difference,
        },
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def trajectory_gradients(
    denoiser: Any,
    scheduler: Any,
    trajectory: np.ndarray,
    timesteps: np.ndarray,
    sample_ids: np.ndarray,
    output_fn: str,
    noise_seed: int,
    projector: Any,
    batch_size: int,
    cond: Any = None,
    progress: IO[str] | None = None,
) -> np.ndarray:
    """Projected mean over steps i of ∇θ f at (x̂0_i, t_i): float32 [n, Z].

    A dense projector projects the mean [B, P] gradient once; a structured one projects each
    step with :func:`diffattr.features.projected_mean_gradients` (never forming [B, P]) and
    averages: the projection is linear, so both are the projection of the mean gradient.

    ``trajectory`` is [n, steps, C, H, W]; ``cond`` the [n, L, D] caption embeddings of a
    conditional model (or None).
    """
    import torch
    from tqdm import tqdm

    from diffattr.features import mean_gradients, projected_mean_gradients
    from diffattr.noise import feature_noise_keys

    n = trajectory.shape[0]
    keys = feature_noise_keys("independent", "gen", sample_ids, np.arange(n))
    structured = getattr(projector, "projection", "dense") == "structured"
    out = np.empty((n, projector.proj_dim), dtype=np.float32)
    for start in tqdm(range(0, n, batch_size), file=progress, disable=progress is None):
        stop = min(start + batch_size, n)
        batch_cond = None if cond is None else cond[start:stop]
        total = None
        for step, t in enumerate(timesteps):
            x0 = torch.from_numpy(np.ascontiguousarray(trajectory[start:stop, step]))
            args = (denoiser, scheduler, x0, sample_ids[start:stop], [int(t)], output_fn)
            if structured:
                part = projected_mean_gradients(
                    *args, noise_seed, projector, cond=batch_cond, noise_keys=keys[start:stop]
                )
            else:  # sum the [B, P] gradients, project once
                part = mean_gradients(
                    *args, noise_seed, cond=batch_cond, noise_keys=keys[start:stop]
                ).float()
            total = part if total is None else total.add_(part)
        total = total.div_(len(timesteps))
        out[start:stop] = (total if structured else projector.project(total)).cpu().numpy()
    return out


def trajectory_features_job(
    model_dir: str,
    samples_path: str,
    trajectory_path: str,
    out_path: str,
    output_fn: str,
    proj_kind: str,
    proj_dim: int,
    proj_seed: int,
    noise_seed: int,
    batch_size: int,
    device: str,
    projection: str = "auto",
    allocation: str = "proportional",
    progress: IO[str] | None = None,
) -> None:
    """Journey-TRAK features of the generated samples, written like any feature file.

    A conditional model is conditioned on each sample's recorded prompt (no guidance).
    """
    from diffattr import features, store
    from diffattr.jobs import load_query_captions
    from diffattr.models import load_diffusion_model, resolve_device
    from diffattr.projection_structured import make_feature_projector

    digest = store.digest_directory(model_dir)
    with store.open_h5(trajectory_path) as handle:
        store.require_attrs(
            {k: store.decode_attr(v) for k, v in handle.attrs.items()},
            {"model_digest": digest},
            f"{trajectory_path} vs model {model_dir}",
        )
        trajectory = handle["x0_trajectory"][()]
        timesteps = handle["timesteps"][()].astype(np.int64)
        ids = handle["ids"][()].astype(np.int64)
    model = load_diffusion_model(model_dir, resolve_device(device))
    cond = None
    if model.conditional:
        cond = model.condition(load_query_captions("gen", "", samples_path))
    grad_dim = features.num_trainable_parameters(model.denoiser)
    projector = make_feature_projector(
        model.denoiser, proj_dim, proj_seed, proj_kind, projection, allocation
    )
    matrix = trajectory_gradients(
        model.denoiser,
        model.scheduler,
        trajectory,
        timesteps,
        ids,
        output_fn,
        noise_seed,
        projector,
        batch_size,
        cond=cond,
        progress=progress,
    )
    attrs = {
        "split": "gen",
        "output_fn": output_fn,
        "K": int(len(timesteps)),
        "t_strategy": "trajectory",
        "timesteps": timesteps.tolist(),
        "noise_seed": noise_seed,
        "noise": "independent",
        "model_digest": digest,
        "model_kind": model.kind,
        "grad_dim": grad_dim,
        **{
            f"proj_{k}" if not k.startswith("proj") else k: v
            for k, v in projector.describe().items()
        },
    }
    features.write_features(out_path, matrix, ids, attrs)
