"""File-level jobs: each reads its input files, calls the library kernels, writes its outputs.

This is the orchestration layer between Snakemake (``scripts/*.py`` call exactly one function
here) and the pure kernels (training, sampling, features, scoring, lds). Every function takes
plain values and paths, so it runs the same from a script, a test or a REPL.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from diffattr import data, lds, store
from diffattr import noise as noise_lib
from diffattr.errors import ConfigError, FeatureMismatchError
from diffattr.progress import STATUS_LOGGER, StatusCollector, status, status_line

logger = logging.getLogger("diffattr")

TEST_SPLITS = ("val", "gen")
FEATURE_SPLITS = ("train", "val", "gen")


@contextlib.contextmanager
def job_logging(log_path: str | os.PathLike | None, threads: int = 1) -> Iterator[IO[str]]:
    """Send this job's logging, warnings, progress bars and tracebacks to its log file; on
    success print one status line on the terminal (see :mod:`diffattr.progress`)."""
    if "torch" in sys.modules or threads > 1:
        import torch

        torch.set_num_threads(max(1, int(threads)))
    if log_path is None:
        yield sys.stderr
        return
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", buffering=1) as stream:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        old_stderr, sys.stderr = sys.stderr, stream
        logging.captureWarnings(True)
        collector = StatusCollector()
        logging.getLogger(STATUS_LOGGER).addHandler(collector)
        started = time.monotonic()
        try:
            yield stream
        except BaseException:
            logger.exception("job failed")
            raise
        else:
            line = status_line(log_path, time.monotonic() - started, collector.message)
            print(line, file=old_stderr, flush=True)
        finally:
            sys.stderr = old_stderr
            root.removeHandler(handler)
            logging.getLogger(STATUS_LOGGER).removeHandler(collector)


# --------------------------------------------------------------------------- data


def prepare_data_job(data_cfg: dict[str, Any], out_path: str) -> None:
    data.prepare_dataset(data_cfg, out_path)
    attrs = store.read_attrs(out_path)
    status("%s train rows, %s val rows", attrs.get("n_train"), attrs.get("n_val"))


def draw_subset_job(
    dataset_path: str,
    out_path: str,
    pool: str,
    k: int,
    alpha: float,
    pool_seed: int,
    stratify: bool,
) -> None:
    train = data.load_split(dataset_path, "train")
    positions = data.draw_subset(train.labels, alpha, pool_seed, k, stratify)
    data.write_subset(
        out_path,
        positions,
        {"pool": pool, "k": k, "alpha": alpha, "pool_seed": pool_seed, "n_train": len(train)},
    )


# --------------------------------------------------------------------------- models


def train_job(
    dataset_path: str,
    out_dir: str,
    checkpoint_dir: str,
    model_cfg: dict[str, Any],
    scheduler_cfg: dict[str, Any],
    training_cfg: dict[str, Any],
    seed: int,
    device: str,
    subset_path: str | None = None,
    snapshot_dirs: dict[int, str] | None = None,
    progress: IO[str] | None = None,
) -> dict[str, Any]:
    """Train on the whole train split, or on the rows of ``subset_path``.

    ``model_cfg["kind"]`` picks the model (``unet``, or ``sd_lora``: LoRA on a Stable Diffusion
    base, conditioned on the split's captions); only the trained weights are saved.
    """
    import torch

    from diffattr.models import build_model, resolve_device
    from diffattr.training import TrainingSettings, train_diffusion_model

    train = data.load_split(dataset_path, "train")
    images, captions = train.images, train.captions
    if subset_path is not None:
        positions = data.read_subset(subset_path)
        images = images[positions]
        captions = None if captions is None else [captions[p] for p in positions]
    values = {k: v for k, v in training_cfg.items() if k != "main_seed"}
    settings = TrainingSettings.from_dict(values, seed=int(seed), device=device)
    torch.manual_seed(settings.seed)  # the initial weights (the adapters' for sd_lora)
    model = build_model(model_cfg, scheduler_cfg, resolve_device(settings.device))
    stats = train_diffusion_model(
        model,
        images,
        settings,
        out_dir,
        checkpoint_dir,
        captions=captions,
        snapshots=snapshot_dirs,
        progress=progress,
    )
    logger.info("trained %s: %s", out_dir, stats)
    status("%s steps, final loss %.4g", stats["steps"], stats.get("final_loss", np.nan))
    return stats


def generate_job(
    model_dir: str,
    out_path: str,
    grid_path: str,
    num_samples: int,
    steps: int,
    eta: float,
    seed: int,
    batch_size: int,
    grid_columns: int,
    device: str,
    progress: IO[str] | None = None,
    dataset_path: str | None = None,
    guidance_scale: float = 7.5,
    prompts: Sequence[str] | None = None,
) -> None:
    """Seeded DDIM samples of the main model; a conditional model gets one prompt per sample.

    Prompts are ``prompts`` in contiguous blocks, or by default the dataset's class captions
    (in label order) in blocks; each sample's prompt is stored in the ``prompts`` dataset.
    """
    from diffattr.models import load_diffusion_model, resolve_device
    from diffattr.sample_quality import real_examples, sample_sheet
    from diffattr.sampling import assign_prompts, generate, sample_seeds

    model = load_diffusion_model(model_dir, resolve_device(device))
    seeds = sample_seeds(num_samples, seed)
    per_sample = None
    if model.conditional:
        if prompts is None:
            if dataset_path is None:
                raise ConfigError(
                    "generation.prompts is null, so prompts come from the class captions, "
                    "but no dataset file was given"
                )
            prompts = class_captions(dataset_path)
        per_sample = assign_prompts(num_samples, prompts)
    result = generate(model, seeds, steps, eta, batch_size, per_sample, guidance_scale, progress)
    attrs = {
        "split": "gen",
        "model_digest": store.digest_directory(model_dir),
        "model_kind": model.kind,
        "steps": steps,
        "eta": eta,
        "gen_seed": seed,
        "sampler": "ddim",
        "batch_size": batch_size,  # on CPU the batch layout fixes the last bits (regeneration)
    }
    arrays = {
        "images": result["images"],
        "seeds": seeds,
        "ids": np.arange(num_samples, dtype=np.int64),
    }
    if per_sample is not None:
        arrays["prompts"] = np.array(per_sample, dtype=object)
        attrs["guidance_scale"] = guidance_scale
    store.write_h5(out_path, arrays, attrs)
    shown = result["images"][: grid_columns * grid_columns]
    real = real_examples(dataset_path, len(shown)) if dataset_path is not None else None
    save_png(grid_path, sample_sheet(shown, real, grid_columns), scale=1)
    status("%d samples, %d DDIM steps", num_samples, steps)


def class_captions(dataset_path: str) -> list[str]:
    """The caption of each class of the train split, in label order."""
    with store.open_h5(dataset_path) as handle:
        if "train/captions" not in handle:
            raise ConfigError(
                f"{dataset_path}: the train split has no captions to use as prompts; set "
                "generation.prompts, or data.caption_template and rebuild the dataset"
            )
        labels = handle["train/labels"][()]
        captions = [_text(c) for c in handle["train/captions"][()]]
    by_label: dict[int, str] = {}
    for label, caption in zip(labels.tolist(), captions, strict=True):
        by_label.setdefault(int(label), caption)
    return [by_label[label] for label in sorted(by_label)]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def save_png(path: str, pixels: np.ndarray, scale: int = 4) -> None:
    from PIL import Image

    image = Image.fromarray(pixels)
    image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    with store.atomic_path(path, suffix=".png") as tmp:
        image.save(tmp, format="PNG")


def load_queries(
    split: str, dataset_path: str, samples_path: str | None
) -> tuple[np.ndarray, np.ndarray]:
    """Images and ids of a query split: ``train``/``val`` from the dataset, ``gen`` from samples."""
    if split == "gen":
        if samples_path is None:
            raise ConfigError("split 'gen' needs the generated samples file")
        with store.open_h5(samples_path) as handle:
            return handle["images"][()], handle["ids"][()]
    if split not in ("train", "val"):
        raise ConfigError(f"unknown split {split!r}; valid splits: train, val, gen")
    loaded = data.load_split(dataset_path, split)
    return loaded.images, loaded.ids


def load_query_captions(
    split: str, dataset_path: str, samples_path: str | None
) -> list[str] | None:
    """Captions of a query split (``gen``: the recorded prompts), or None when it has none."""
    if split == "gen":
        if samples_path is None:
            raise ConfigError("split 'gen' needs the generated samples file")
        path, name = samples_path, "prompts"
    elif split in ("train", "val"):
        path, name = dataset_path, f"{split}/captions"
    else:
        raise ConfigError(f"unknown split {split!r}; valid splits: train, val, gen")
    with store.open_h5(path) as handle:
        return [_text(c) for c in handle[name][()]] if name in handle else None


def encoded_queries(
    model: Any,
    images: np.ndarray,
    captions: list[str] | None,
    batch_size: int,
    chunk_rows: int = 1024,
) -> Iterator[tuple[slice, np.ndarray, Any]]:
    """(rows, x0, cond) in row chunks: x0 through ``model.encode`` (the VAE mode for latent
    models), cond the caption embeddings of a conditional model (else None).

    A pixel model gets one chunk with the images unchanged; a latent model chunks of
    ``chunk_rows`` rows, so embeddings and latents never exist for the whole split at once.
    """
    n = len(images)
    if not model.uses_latents and not model.conditional:
        yield slice(0, n), images, None
        return
    if model.conditional and (captions is None or len(captions) != n):
        raise ConfigError(
            f"a {model.kind} model is conditioned on captions, but the {n} query samples have "
            f"{'none' if captions is None else len(captions)}; set data.caption_template "
            "(val/train) or regenerate the samples (gen)"
        )
    for start in range(0, n, chunk_rows):
        rows = slice(start, min(start + chunk_rows, n))
        x0 = model.encode(images[rows], batch_size).numpy()
        cond = model.condition(captions[rows]) if model.conditional else None
        yield rows, x0, cond


# --------------------------------------------------------------------------- measurement


def measure_job(
    model_dir: str,
    dataset_path: str,
    samples_path: str,
    out_path: str,
    splits: Sequence[str],
    timesteps: int,
    noise_seeds: Sequence[int],
    batch_size: int,
    device: str,
    progress: IO[str] | None = None,
) -> None:
    """Per-sample loss of one model on every query split, averaged over the timestep grid.

    A conditional model is conditioned on each sample's caption (gen: its recorded prompt),
    without guidance; a latent model measures in latent space (x0 = VAE mode).
    """
    from diffattr.measure import measure_losses, timestep_grid
    from diffattr.models import load_diffusion_model, resolve_device

    model = load_diffusion_model(model_dir, resolve_device(device))
    scheduler = model.scheduler
    grid = timestep_grid(timesteps, scheduler.config.num_train_timesteps)
    arrays: dict[str, np.ndarray] = {}
    for split in splits:
        images, ids = load_queries(split, dataset_path, samples_path)
        captions = None
        if model.conditional:
            captions = load_query_captions(split, dataset_path, samples_path)
        parts = []
        for rows, x0, cond in encoded_queries(model, images, captions, batch_size):
            parts.append(
                measure_losses(
                    model.denoiser,
                    scheduler,
                    x0,
                    ids[rows],
                    grid,
                    list(noise_seeds),
                    f"measure/{split}",
                    batch_size,
                    cond=cond,
                    progress=progress,
                )
            )
        by_noise = np.concatenate(parts, axis=1)
        arrays[f"{split}/loss_by_noise"] = by_noise
        arrays[f"{split}/loss"] = by_noise.mean(axis=0)
        arrays[f"{split}/ids"] = ids
    attrs = {
        "model_digest": store.digest_directory(model_dir),
        "model_kind": model.kind,
        "splits": list(splits),
        "timesteps": grid.tolist(),
        "noise_seeds": list(noise_seeds),
        "output": "diffusion loss mean_d (eps_hat - eps)^2",
    }
    if model.uses_latents:
        attrs["space"] = "VAE latent mode x scaling_factor"
    if model.conditional:
        attrs["condition"] = "caption (gen: recorded prompt), no guidance"
    store.write_h5(out_path, arrays, attrs)
    losses = [f"{split} {arrays[f'{split}/loss'].mean():.4g}" for split in splits]
    status("mean loss %s", ", ".join(losses))


# --------------------------------------------------------------------------- features


def shard_rows(n_rows: int, shard: int, num_shards: int) -> slice:
    """Contiguous row range of shard ``shard`` of ``num_shards`` (sizes differ by at most one)."""
    if not 0 <= shard < num_shards:
        raise ConfigError(f"shard {shard} is out of range for {num_shards} shards")
    bounds = np.linspace(0, n_rows, num_shards + 1).round().astype(int)
    return slice(int(bounds[shard]), int(bounds[shard + 1]))


def features_job(
    model_dir: str,
    dataset_path: str,
    samples_path: str | None,
    out_path: str,
    split: str,
    output_fn: str,
    K: int,
    t_strategy: str,
    proj_kind: str,
    proj_dim: int,
    proj_seed: int,
    noise_seed: int,
    batch_size: int,
    device: str,
    shard: int = 0,
    num_shards: int = 1,
    projection: str = "auto",
    allocation: str = "proportional",
    progress: IO[str] | None = None,
    noise: str = "independent",
    noise_batch_size: int = noise_lib.REFERENCE_BATCH_SIZE,
    noise_shard_rows: int = noise_lib.REFERENCE_SHARD_ROWS,
) -> None:
    """Projected per-sample gradient features of one split (or one shard of the train split).

    ``projection`` / ``allocation``: :func:`diffattr.projection_structured.make_feature_projector`.

    The gradient is over the model's trainable parameters (the LoRA adapters of an ``sd_lora``
    model); a latent model works on the VAE mode, conditioned on each sample's caption.
    ``noise`` is the feature-noise scheme (:data:`diffattr.noise.NOISE_SCHEMES`); the
    ``reference`` scheme groups rows by their position in the whole split, so shards agree.
    """
    from diffattr import features
    from diffattr.models import load_diffusion_model, resolve_device
    from diffattr.projection_structured import make_feature_projector

    output_fn, normalize_timesteps = features.parse_feature_name(output_fn)
    model = load_diffusion_model(model_dir, resolve_device(device))
    scheduler = model.scheduler
    images, ids = load_queries(split, dataset_path, samples_path)
    captions = load_query_captions(split, dataset_path, samples_path) if model.conditional else None
    rows = shard_rows(len(ids), shard, num_shards)
    images, ids = images[rows], ids[rows]
    captions = None if captions is None else captions[rows]
    noise_keys = noise_lib.feature_noise_keys(
        noise, split, ids, np.arange(rows.start, rows.stop), noise_batch_size, noise_shard_rows
    )
    steps = features.select_timesteps(K, t_strategy, scheduler.config.num_train_timesteps)
    grad_dim = features.num_trainable_parameters(model.denoiser)
    projector = make_feature_projector(
        model.denoiser, proj_dim, proj_seed, proj_kind, projection, allocation
    )
    parts = []
    for chunk, x0, cond in encoded_queries(model, images, captions, batch_size):
        parts.append(
            features.extract_features(
                model.denoiser,
                scheduler,
                x0,
                ids[chunk],
                output_fn,
                steps,
                noise_seed,
                projector,
                batch_size,
                cond=cond,
                progress=progress,
                normalize_timesteps=normalize_timesteps,
                noise_keys=noise_keys[chunk],
            )
        )
    matrix = np.concatenate(parts, axis=0)
    attrs = {
        "split": split,
        "output_fn": output_fn,
        "timestep_norm": normalize_timesteps,
        "K": K,
        "t_strategy": t_strategy,
        "timesteps": steps,
        "noise_seed": noise_seed,
        **noise_lib.feature_noise_attrs(noise, noise_batch_size, noise_shard_rows),
        "model_digest": store.digest_directory(model_dir),
        "model_kind": model.kind,
        "grad_dim": grad_dim,
        "shard": shard,
        "num_shards": num_shards,
        **{
            f"proj_{k}" if not k.startswith("proj") else k: v
            for k, v in projector.describe().items()
        },
    }
    features.write_features(out_path, matrix, ids, attrs)
    status("%s features [%d x %d]", split, *matrix.shape)


def merge_features_job(shard_paths: Sequence[str], out_path: str) -> None:
    from diffattr import features

    features.merge_feature_shards(list(shard_paths), out_path)


# scores: diffattr.methods.score_method_job (one rule, every method kind)


# --------------------------------------------------------------------------- ground truth and LDS


def groundtruth_job(
    dataset_path: str,
    subset_paths: Sequence[str],
    measured_paths: Sequence[Sequence[str]],
    out_path: str,
    pool: str,
    splits: Sequence[str],
) -> None:
    """Collect one pool's masks [S, N] and measured outputs [R seeds, S, n] per split."""
    train = data.load_split(dataset_path, "train")
    masks = data.subset_mask([data.read_subset(p) for p in subset_paths], len(train))
    arrays: dict[str, np.ndarray] = {"masks": masks, "train_ids": train.ids}
    for split in splits:
        by_seed, ids = [], None
        for per_seed in measured_paths:  # [seed][subset]
            if len(per_seed) != len(subset_paths):
                raise FeatureMismatchError(
                    f"{len(per_seed)} measured files for {len(subset_paths)} subsets of pool {pool!r}"
                )
            rows = []
            for path in per_seed:
                with store.open_h5(path) as handle:
                    if f"{split}/loss" not in handle:
                        raise FeatureMismatchError(
                            f"{path}: has no measured outputs for split {split!r}"
                        )
                    rows.append(handle[f"{split}/loss"][()])
                    these = handle[f"{split}/ids"][()]
                if ids is not None and not np.array_equal(ids, these):
                    raise FeatureMismatchError(f"{path}: query ids differ from the other models'")
                ids = these
            by_seed.append(np.stack(rows))
        arrays[f"{split}/measured_by_seed"] = np.stack(by_seed)
        arrays[f"{split}/measured"] = np.stack(by_seed).mean(axis=0)
        arrays[f"{split}/ids"] = ids
    store.write_h5(
        out_path,
        arrays,
        {
            "pool": pool,
            "num_subsets": len(subset_paths),
            "num_seeds": len(measured_paths),
            "splits": list(splits),
        },
    )


def _load_groundtruth(path: str, split: str) -> dict[str, np.ndarray]:
    with store.open_h5(path) as handle:
        return {
            "masks": handle["masks"][()],
            "train_ids": handle["train_ids"][()],
            "measured": handle[f"{split}/measured"][()],
            "measured_by_seed": handle[f"{split}/measured_by_seed"][()],
            "ids": handle[f"{split}/ids"][()],
        }


def _check_alignment(score: Any, truth: dict[str, np.ndarray], where: str) -> None:
    if not np.array_equal(score.train_ids, truth["train_ids"]):
        raise FeatureMismatchError(
            f"{where}: score columns do not follow the train split's row order"
        )
    if not np.array_equal(score.test_ids, truth["ids"]):
        raise FeatureMismatchError(f"{where}: score rows do not match the measured queries")


def lds_job(
    scores_path: str,
    groundtruth_path: str,
    heldout_path: str,
    out_path: str,
    split: str,
    bootstrap_resamples: int,
    bootstrap_seed: int,
    sign: int | None = None,
    lambdas: Sequence[float] | None = None,
    train_paths: Sequence[str] | None = None,
) -> dict[str, Any]:
    """LDS over the λ grid on both pools; λ chosen on the held-out pool and, as an oracle, on the
    benchmark itself; and cross-fitted over the benchmark subsets (``crossfit``: λ chosen on
    one half, evaluated on the other, and swapped; :func:`diffattr.lds.crossfit_choice`).
    Writes a JSON record with the full curves.

    ``scores_path`` is a spectra file (methods with a ridge λ, evaluated on ``lambdas`` without a
    score matrix per λ: :mod:`diffattr.spectral`; a primal one reads ``train_paths``, the
    members' training features, again) or a score file. ``sign`` defaults to its
    ``lds_sign`` attr (+1 for scores in loss units, such as empirical influence and datamodels;
    −1 otherwise)."""
    from diffattr import spectral

    bench = _load_groundtruth(groundtruth_path, split)
    held = _load_groundtruth(heldout_path, split)
    with spectral.open_scores(scores_path, lambdas, train_paths) as score:
        _check_alignment(score, bench, scores_path)
        _check_alignment(score, held, scores_path)
        factor = score.sign if sign is None else int(sign)
        flip = factor / score.sign  # an explicit sign overrides the file's
        bench_predictions = flip * score.predictions(bench["masks"])
        held_predictions = flip * score.predictions(held["masks"])
        grid, attrs = score.lambdas, score.attrs
    num_subsets = bench["masks"].shape[0]
    folds = lds.crossfit_folds(num_subsets) if num_subsets >= 4 else []
    full = lds.lds_from_predictions(bench_predictions, bench["measured"])
    fold_curves = [
        lds.lds_from_predictions(bench_predictions[:, rows], bench["measured"][rows])
        for rows in folds
    ]
    curve = _nanmean_rows(full, "lds")
    heldout_curve = _nanmean_rows(
        lds.lds_from_predictions(held_predictions, held["measured"]), "heldout"
    )
    record: dict[str, Any] = {
        "method": attrs.get("method"),
        "split": split,
        "K": attrs.get("train_K", attrs.get("K")),
        "kind": attrs.get("kind", attrs.get("score_kind")),
        "readout": attrs.get("readout", "signed"),
        "lds_sign": factor,
        "params": attrs.get("params"),
        "lambdas": grid.tolist(),
        "lds_curve": curve.tolist(),
        "heldout_curve": heldout_curve.tolist(),
        "num_subsets": int(bench["masks"].shape[0]),
        "num_heldout_subsets": int(held["masks"].shape[0]),
        "num_queries": int(bench["measured"].shape[1]),
        "choices": {},
    }
    oracle_index = int(np.nanargmax(curve))
    heldout_index, _ = lds.choose_lambda(heldout_curve, grid)
    for name, index in (("heldout", heldout_index), ("oracle", oracle_index)):
        boot = lds.bootstrap_predictions(
            bench_predictions[index], bench["measured"], bootstrap_resamples, bootstrap_seed
        )
        record["choices"][name] = {
            "lambda": float(grid[index]),
            "lambda_index": index,
            "lds": float(curve[index]),
            "boot_mean": float(boot["mean"]),
            "boot_std": float(boot["std"]),
            "ci_low": float(boot["ci_low"]),
            "ci_high": float(boot["ci_high"]),
            "at_grid_edge": lds.at_grid_edge(index, len(grid)),
            # [S, n] at this λ, for paired comparisons between methods (diffattr.summary)
            "predictions": bench_predictions[index].tolist(),
        }
    if fold_curves:
        crossfit = lds.crossfit_choice(fold_curves, grid)
        record["crossfit"] = {
            **crossfit,
            "folds": len(folds),
            "fold_subsets": [len(f) for f in folds],
            "fold_curves": [lds.curve_mean(c).tolist() for c in fold_curves],
        }
    for name, choice in [*record["choices"].items(), ("crossfit", record.get("crossfit"))]:
        if choice and choice["at_grid_edge"]:
            status("warning: the %s λ is at the edge of the grid; widen scoring.lambdas", name)
    store.write_json(out_path, record)
    held = record["choices"]["heldout"]
    status(
        "LDS %.2f%% at held-out λ %g (oracle %.2f%%)",
        100 * held["lds"],
        held["lambda"],
        100 * record["choices"]["oracle"]["lds"],
    )
    return record


def _nanmean_rows(per_query: np.ndarray, where: str) -> np.ndarray:
    """LDS per λ: ``nanmean`` over queries of [L, n], warning once per λ with NaN queries."""
    summaries = [lds.summarise(row) for row in per_query]
    for summary in summaries:
        lds._warn_nan(summary, where)
    return np.array([summary["lds"] for summary in summaries], dtype=np.float64)


def heldout_lambda_index(
    score: Any, heldout: dict[str, np.ndarray], where: str
) -> tuple[int, np.ndarray]:
    """(index, held-out curve): the λ with the best held-out LDS, as in :func:`lds_job`."""
    _check_alignment(score, heldout, where)
    predictions = score.predictions(heldout["masks"])
    curve = _nanmean_rows(lds.lds_from_predictions(predictions, heldout["measured"]), where)
    index, _ = lds.choose_lambda(curve, score.lambdas)
    return index, curve


def select_scores_job(
    spectra_path: str,
    heldout_path: str,
    out_path: str,
    split: str,
    lambdas: Sequence[float],
    chunk_rows: int = 4096,
    train_paths: Sequence[str] | None = None,
) -> float:
    """The score file of a method with a ridge λ at the λ that is used: the held-out choice of
    this split (the λ of the proponent figures and, on gen, of the counterfactual removals, the
    choice of :func:`lds_job`). Returns that λ."""
    from diffattr import spectral

    held = _load_groundtruth(heldout_path, split)
    with spectral.open_scores(spectra_path, lambdas, train_paths) as score:
        index, curve = heldout_lambda_index(score, held, spectra_path)
        value = float(score.lambdas[index])
        extra = {
            "lambda_choice": "heldout",
            "heldout_lambda": value,
            "heldout_lambda_index": index,
            "heldout_curve": curve.tolist(),
        }
        spectral.write_selected_scores(score, out_path, [index], extra, chunk_rows)
    status("scores at the held-out λ %g", value)
    return value


def score_grid_job(
    spectra_path: str,
    out_path: str,
    lambdas: Sequence[float],
    chunk_rows: int = 4096,
    train_paths: Sequence[str] | None = None,
) -> None:
    """Score matrices at every λ of the grid (``scoring.write_all_lambdas``)."""
    from diffattr import spectral

    with spectral.open_scores(spectra_path, lambdas, train_paths) as score:
        spectral.write_selected_scores(score, out_path, range(len(score.lambdas)), None, chunk_rows)
    status("scores at %d λ", len(lambdas))


def noise_ceiling_job(groundtruth_path: str, out_path: str, splits: Sequence[str]) -> None:
    """Seed-to-seed agreement of the measured outputs, per split (needs >= 2 training seeds)."""
    record: dict[str, Any] = {}
    for split in splits:
        truth = _load_groundtruth(groundtruth_path, split)
        by_seed = truth["measured_by_seed"]
        if by_seed.shape[0] < 2:
            record[split] = None
            continue
        ceiling = lds.noise_ceiling(by_seed)
        record[split] = {
            "mean": ceiling["mean"],
            "per_pair": np.asarray(ceiling["per_pair"]).tolist(),
            "attainable": ceiling["attainable"],
            "seeds": ceiling["seeds"],
            "decomposition": lds.ceiling_decomposition(by_seed),
        }
    store.write_json(out_path, record)
