"""Jobs of ``rules/features.smk``: gradient features (query splits and train shards, their
merge), the Journey-TRAK trajectory and its features, and the CLIP embeddings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from diffattr import noise as noise_lib
from diffattr import store
from diffattr.errors import ConfigError, FeatureMismatchError
from diffattr.files import read_samples, read_trajectory, write_features, write_trajectory
from diffattr.methods.journey import IMAGE_TOLERANCE, trajectory_gradients
from diffattr.methods.similarity import clip_unavailable_reason
from diffattr.progress import status
from diffattr.queries import encoded_queries, load_queries, load_query_captions
from diffattr.settings import FeatureSettings, Runtime, SplitRows, TrajectoryFeatureSettings


def shard_rows(n_rows: int, shard: int, num_shards: int) -> slice:
    """Contiguous row range of shard ``shard`` of ``num_shards`` (sizes differ by at most one)."""
    if not 0 <= shard < num_shards:
        raise ConfigError(f"shard {shard} is out of range for {num_shards} shards")
    bounds = np.linspace(0, n_rows, num_shards + 1).round().astype(int)
    return slice(int(bounds[shard]), int(bounds[shard + 1]))


def dataset_calibration(model, dataset_path: str, output_fn: str, seed: int):
    """The ``energy`` allocation's calibration on the train split of ``dataset_path``
    (:func:`diffattr.calibration.train_calibration`; read only if the projector asks)."""
    from diffattr import data
    from diffattr.calibration import CALIBRATION_ROWS, train_calibration

    def calibrate(groups):
        train = data.load_split(dataset_path, "train", first=CALIBRATION_ROWS)
        captions = train.captions if model.conditional else None
        return train_calibration(model, train.images, train.ids, output_fn, seed, captions)(groups)

    return calibrate


def extract_features(
    model_dir: str,
    dataset_path: str,
    out_path: str,
    *,
    rows: SplitRows,
    settings: FeatureSettings,
    runtime: Runtime,
) -> None:
    """Projected per-sample gradient features of one split (or one shard of the train split).

    ``settings.projection`` / ``allocation``:
    :func:`diffattr.projection_structured.make_feature_projector`.

    The gradient is over the model's trainable parameters (the LoRA adapters of an ``sd_lora``
    model); a latent model works on the VAE mode, conditioned on each sample's caption.
    ``settings.noise`` is the feature-noise scheme (:data:`diffattr.noise.NOISE_SCHEMES`); the
    ``reference`` scheme groups rows by their position in the whole split, so shards agree.
    """
    from diffattr import features
    from diffattr.models import load_diffusion_model, resolve_device

    split, s = rows.split, settings
    output_fn, normalize_timesteps = features.parse_feature_name(s.output_fn)
    model = load_diffusion_model(model_dir, resolve_device(runtime.device))
    scheduler = model.scheduler
    images, ids = load_queries(split, dataset_path, rows.samples_path)
    captions = None
    if model.conditional:
        captions = load_query_captions(split, dataset_path, rows.samples_path)
    taken = shard_rows(len(ids), rows.shard, rows.num_shards)
    images, ids = images[taken], ids[taken]
    captions = None if captions is None else captions[taken]
    noise_keys = noise_lib.feature_noise_keys(
        s.noise,
        split,
        ids,
        np.arange(taken.start, taken.stop),
        s.noise_batch_size,
        s.noise_shard_rows,
    )
    steps = features.select_timesteps(s.K, s.t_strategy, scheduler.config.num_train_timesteps)
    grad_dim = features.num_trainable_parameters(model.denoiser)
    projector = s.projector(
        model.denoiser, dataset_calibration(model, dataset_path, output_fn, s.proj_seed)
    )
    options = features.GradientOptions(
        output_fn=output_fn,
        timesteps=steps,
        noise_seed=s.noise_seed,
        normalize_timesteps=normalize_timesteps,
    )
    parts = []
    for chunk, x0, cond in encoded_queries(model, images, captions, runtime.batch_size):
        inputs = features.QueryRows(x0, ids[chunk], cond, noise_keys[chunk])
        parts.append(
            features.extract_features(
                model.denoiser, scheduler, inputs, options, projector, runtime
            )
        )
    matrix = np.concatenate(parts, axis=0)
    attrs = {
        "split": split,
        "output_fn": output_fn,
        "timestep_norm": normalize_timesteps,
        "K": s.K,
        "t_strategy": s.t_strategy,
        "timesteps": steps,
        "noise_seed": s.noise_seed,
        **noise_lib.feature_noise_attrs(s.noise, s.noise_batch_size, s.noise_shard_rows),
        "model_digest": store.digest_directory(model_dir),
        "model_kind": model.kind,
        "grad_dim": grad_dim,
        "shard": rows.shard,
        "num_shards": rows.num_shards,
        **{
            f"proj_{k}" if not k.startswith("proj") else k: v
            for k, v in projector.describe().items()
        },
    }
    write_features(out_path, matrix, ids, attrs)
    status("%s features [%d x %d]", split, *matrix.shape)


def merge_train_features(shard_paths: Sequence[str], out_path: str) -> None:
    from diffattr import features

    features.merge_feature_shards(list(shard_paths), out_path)


def record_trajectory(
    model_dir: str,
    samples_path: str,
    out_path: str,
    *,
    runtime: Runtime,
) -> None:
    """Re-run the generation of ``samples_path`` and store x̂0 at every DDIM step.

    Seeds, steps, η, prompts and guidance come from ``samples_path`` itself. x̂0 is clamped
    pixels for a pixel model and unclamped latents for a latent model (protocol §4.1).
    """
    from diffattr import store
    from diffattr.models import load_diffusion_model, resolve_device
    from diffattr.sampling import DdimSettings, generate

    samples = read_samples(samples_path)
    images, seeds, ids, prompts = samples.images, samples.seeds, samples.ids, samples.prompts
    gen = samples.generation()
    digest = store.digest_directory(model_dir)
    store.require_attrs(
        samples.attrs, {"model_digest": digest}, f"{samples_path} vs model {model_dir}"
    )
    model = load_diffusion_model(model_dir, resolve_device(runtime.device))
    steps, eta, guidance = gen.steps, gen.eta, gen.guidance_scale
    ddim = DdimSettings(
        steps=steps, eta=eta, guidance_scale=guidance, batch_size=runtime.batch_size
    )
    result = generate(model, seeds, ddim, prompts, progress=runtime.progress, trajectory=True)
    difference = float(np.abs(result["images"] - images).max())
    if difference > IMAGE_TOLERANCE:
        raise FeatureMismatchError(
            f"re-generating {samples_path} with {model_dir} gives images that differ by up to "
            f"{difference:.3g} (> {IMAGE_TOLERANCE}); the trajectory would not be the one that "
            "produced the samples. Regenerate the samples (rule generate_samples)."
        )
    write_trajectory(
        out_path,
        result["x0_trajectory"],
        result["trajectory_timesteps"],
        ids,
        seeds,
        {
            "split": "gen",
            "model_digest": digest,
            "steps": steps,
            "eta": eta,
            "gen_seed": samples.attrs["gen_seed"],
            "max_image_difference": difference,
        },
    )


@dataclass(frozen=True)
class TrajectoryInputs:
    """The files Journey-TRAK's gen features are computed from: the main model, the dataset
    (whose train rows calibrate an ``energy`` layout), the samples and their trajectory."""

    model_dir: str
    dataset_path: str
    samples_path: str
    trajectory_path: str


def extract_trajectory_features(
    inputs: TrajectoryInputs,
    out_path: str,
    *,
    settings: TrajectoryFeatureSettings,
    runtime: Runtime,
) -> None:
    """Journey-TRAK features of the generated samples, written like any feature file.

    A conditional model is conditioned on each sample's recorded prompt (no guidance).
    """
    from diffattr import features, store
    from diffattr.models import load_diffusion_model, resolve_device

    model_dir, samples_path = inputs.model_dir, inputs.samples_path
    trajectory_path = inputs.trajectory_path
    output_fn, noise_seed = settings.output_fn, settings.noise_seed
    digest = store.digest_directory(model_dir)
    recorded = read_trajectory(trajectory_path)
    store.require_attrs(
        recorded.attrs, {"model_digest": digest}, f"{trajectory_path} vs model {model_dir}"
    )
    trajectory, timesteps, ids = recorded.x0, recorded.timesteps, recorded.ids
    model = load_diffusion_model(model_dir, resolve_device(runtime.device))
    cond = None
    if model.conditional:
        cond = model.condition(load_query_captions("gen", "", samples_path))
    grad_dim = features.num_trainable_parameters(model.denoiser)
    projector = settings.projector(
        model.denoiser,
        dataset_calibration(model, inputs.dataset_path, output_fn, settings.proj_seed),
    )
    options = features.GradientOptions(
        output_fn=output_fn, timesteps=timesteps, noise_seed=noise_seed
    )
    matrix = trajectory_gradients(
        model.denoiser,
        model.scheduler,
        features.QueryRows(trajectory, ids, cond),
        options,
        projector,
        runtime,
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
    write_features(out_path, matrix, ids, attrs)


def embed_clip(
    dataset_path: str,
    samples_path: str | None,
    out_path: str,
    *,
    split: str,
    weights: str | None,
    runtime: Runtime,
) -> None:
    """Embed one split (train, val or gen) with CLIP; written like a feature file.

    ``runtime``: the CLIP batch size, the device and the progress stream."""
    from diffattr import store
    from diffattr.clip import ClipEncoder
    from diffattr.models import resolve_device
    from diffattr.queries import load_queries

    reason = clip_unavailable_reason({"weights": weights})
    if reason:
        raise ConfigError(f"cannot compute CLIP embeddings: {reason}")
    images, ids = load_queries(split, dataset_path, samples_path)
    device = str(resolve_device(runtime.device))
    encoder = ClipEncoder(weights, device, runtime.batch_size)
    embeddings = encoder(images, runtime.progress)
    attrs = {
        "split": split,
        "clip_model": encoder.description,
        "clip_weights": str(weights),
        "clip_weights_digest": store.digest_files(encoder.files()),
    }
    write_features(out_path, embeddings, ids, attrs)
