"""Model-free similarity baselines: raw pixels and CLIP embeddings (protocol §5, ``-1_raw``, ``00_clip``).

* ``raw_dot`` / ``raw_cos``: dot product / cosine of flattened images in [-1, 1], or of the VAE
  latent mode for latent models, as the reference did for ArtBench (:func:`raw_inputs`);
* ``clip_dot`` / ``clip_cos``: dot product / cosine of CLIP image embeddings (open_clip,
  ViT-B/32 by default) computed by :func:`clip_embedding_job` with CLIP's own preprocessing.

CLIP weights are never downloaded: ``clip.weights`` names a local checkpoint file, passed to
``open_clip.create_model_and_transforms(model, pretrained=<path>)``. Without it (or without
open_clip installed) the CLIP methods are skipped with a message that says how to enable them.
No ridge λ: one score matrix, stored with λ = 0.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any, ClassVar

import numpy as np

from diffattr.errors import ConfigError
from diffattr.methods.base import (
    NO_LAMBDA,
    Method,
    Need,
    ScoreJob,
    read_feature_pair,
    register,
    write_score_grid,
)
from diffattr.methods.gradient import similarity

logger = logging.getLogger(__name__)

CLIP_CHECK_KEYS = ("clip_model", "clip_weights_digest")


def pixel_features(images: np.ndarray) -> np.ndarray:
    """Flattened images (or latents) [n, D] in float64."""
    images = np.asarray(images, dtype=np.float64)
    return images.reshape(images.shape[0], -1)


def raw_inputs(split: str, dataset_path: str, samples_path: str, model_dir: str) -> tuple:
    """(x [n, D], ids) of a split: pixels in [-1, 1], or the VAE latent mode (unscaled) for a
    latent model, as the reference did for ArtBench."""
    from diffattr.jobs import load_queries
    from diffattr.models import load_diffusion_model, model_kind

    images, ids = load_queries(split, dataset_path, samples_path)
    if model_kind(model_dir) != "unet":
        model = load_diffusion_model(model_dir)
        if model.uses_latents:
            images = model.encode(images, scaled=False).numpy()
    return pixel_features(images), ids


class RawSimilarity(Method):
    uses_K = False
    cosine: ClassVar[bool] = False

    def needs(self, params: Mapping[str, Any], K: int, split: str) -> dict[str, list[Need]]:
        return {
            "dataset": [Need("dataset")],
            "samples": [Need("samples")],
            "model": [Need("main_model")],
        }

    def score(self, job: ScoreJob) -> None:
        files = (job.one_input("dataset"), job.one_input("samples"), job.one_input("model"))
        train, train_ids = raw_inputs("train", *files)
        test, test_ids = raw_inputs(job.split, *files)
        scores = similarity(test, train, self.cosine)
        write_score_grid(job, self, scores, [NO_LAMBDA], train_ids, test_ids)


@register
class RawDot(RawSimilarity):
    kind = "raw_dot"
    summary = "dot product of flattened images in [-1, 1]"


@register
class RawCosine(RawSimilarity):
    kind = "raw_cos"
    summary = "cosine similarity of flattened images in [-1, 1]"
    cosine = True


# --------------------------------------------------------------------------- CLIP


def clip_unavailable_reason(clip_cfg: Mapping[str, Any]) -> str | None:
    """Why CLIP embeddings cannot be computed here, with how to fix it; None when they can."""
    weights = clip_cfg.get("weights")
    if not weights:
        return (
            "clip.weights is not set; save open_clip weights for clip.model "
            f"({clip_cfg.get('model', 'ViT-B-32')}, e.g. the OpenAI checkpoint) to a local file "
            "and set clip.weights to its path (nothing is downloaded)"
        )
    if not Path(weights).is_file():
        return f"clip.weights = {weights!r} is not a file (relative paths start in the workdir)"
    if importlib.util.find_spec("open_clip") is None:
        return "open_clip is not installed; pip install 'diffattr[clip]' (open_clip_torch)"
    return None


class ClipSimilarity(Method):
    uses_K = False
    cosine: ClassVar[bool] = False

    def needs(self, params: Mapping[str, Any], K: int, split: str) -> dict[str, list[Need]]:
        return {
            "train": [Need("clip_embeddings", {"split": "train"})],
            "test": [Need("clip_embeddings", {"split": split})],
        }

    def unavailable_reason(self, config: Mapping[str, Any]) -> str | None:
        return clip_unavailable_reason(config.get("clip", {}))

    def score(self, job: ScoreJob) -> None:
        train, test = read_feature_pair(
            job.one_input("train"), job.one_input("test"), CLIP_CHECK_KEYS
        )
        scores = similarity(test.features, train.features, self.cosine)
        write_score_grid(job, self, scores, [NO_LAMBDA], train.ids, test.ids)


@register
class ClipDot(ClipSimilarity):
    kind = "clip_dot"
    summary = "dot product of CLIP image embeddings"


@register
class ClipCosine(ClipSimilarity):
    kind = "clip_cos"
    summary = "cosine similarity of CLIP image embeddings"
    cosine = True


def to_pil_images(images: np.ndarray) -> list[Any]:
    """float [n, C, H, W] in [-1, 1] → RGB PIL images (grayscale repeated to three channels)."""
    from PIL import Image

    pixels = ((np.clip(images, -1, 1) + 1) * 127.5).round().astype(np.uint8).transpose(0, 2, 3, 1)
    if pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    if pixels.shape[-1] != 3:
        raise ConfigError(f"CLIP needs 1- or 3-channel images, got {pixels.shape[-1]} channels")
    return [Image.fromarray(image) for image in pixels]


def clip_embeddings(
    images: np.ndarray,
    model_name: str,
    weights: str,
    batch_size: int = 64,
    device: str = "cpu",
    progress: IO[str] | None = None,
) -> np.ndarray:
    """CLIP image embeddings [n, D] (float32, not normalised) with CLIP's own preprocessing."""
    import open_clip
    import torch
    from tqdm import tqdm

    model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=weights)
    model = model.to(device).eval()
    pil = to_pil_images(images)
    out = []
    with torch.no_grad():
        for start in tqdm(range(0, len(pil), batch_size), file=progress, disable=progress is None):
            batch = torch.stack([preprocess(image) for image in pil[start : start + batch_size]])
            out.append(model.encode_image(batch.to(device)).float().cpu().numpy())
    return np.concatenate(out).astype(np.float32)


def clip_embedding_job(
    dataset_path: str,
    samples_path: str | None,
    out_path: str,
    split: str,
    model_name: str,
    weights: str | None,
    batch_size: int,
    device: str,
    progress: IO[str] | None = None,
) -> None:
    """Embed one split (train, val or gen) with CLIP; written like a feature file."""
    from diffattr import store
    from diffattr.features import write_features
    from diffattr.jobs import load_queries
    from diffattr.models import resolve_device

    reason = clip_unavailable_reason({"model": model_name, "weights": weights})
    if reason:
        raise ConfigError(f"cannot compute CLIP embeddings: {reason}")
    images, ids = load_queries(split, dataset_path, samples_path)
    device = str(resolve_device(device))
    embeddings = clip_embeddings(images, model_name, weights, batch_size, device, progress)
    attrs = {
        "split": split,
        "clip_model": model_name,
        "clip_weights": str(weights),
        "clip_weights_digest": store.digest_files([weights]),
    }
    write_features(out_path, embeddings, ids, attrs)
