"""Model-free similarity baselines: raw pixels and CLIP embeddings (protocol §5, ``-1_raw``, ``00_clip``).

* ``raw_dot`` / ``raw_cos``: dot product / cosine of flattened images in [-1, 1], or of the VAE
  latent mode for latent models, as the reference did for ArtBench (:func:`raw_inputs`);
* ``clip_dot`` / ``clip_cos``: dot product / cosine of CLIP image embeddings computed by
  :func:`diffattr.jobs.features.embed_clip` through :class:`diffattr.clip.ClipEncoder`
  (transformers, CLIP's own preprocessing; the paper used OpenAI's ViT-B/32).

``clip.weights`` names a transformers checkpoint (a ``save_pretrained`` folder, or a hub id in
the local hub cache). Without it the CLIP methods are skipped with a message that says how to
enable them. No ridge λ: one score matrix, stored with λ = 0.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from diffattr.files import read_feature_pair
from diffattr.methods.base import (
    NO_LAMBDA,
    Method,
    Need,
    ScoreJob,
    register,
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
    from diffattr.models import load_diffusion_model, model_kind
    from diffattr.queries import load_queries

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
        self.write_score_grid(job, scores, [NO_LAMBDA], train_ids, test_ids)


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
    from diffattr.clip import unavailable_reason

    return unavailable_reason(clip_cfg.get("weights"))


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
        self.write_score_grid(job, scores, [NO_LAMBDA], train.ids, test.ids)


@register
class ClipDot(ClipSimilarity):
    kind = "clip_dot"
    summary = "dot product of CLIP image embeddings"


@register
class ClipCosine(ClipSimilarity):
    kind = "clip_cos"
    summary = "cosine similarity of CLIP image embeddings"
    cosine = True
