"""CLIP image embeddings through transformers: the one CLIP of the project.

Used by the ``clip_dot`` / ``clip_cos`` methods (:mod:`diffattr.methods.similarity`) and by the
counterfactual CLIP metric (:mod:`diffattr.jobs.counterfactual`). ``clip.weights`` names a
transformers checkpoint:

* a local folder written by ``save_pretrained`` of a ``CLIPModel`` (both towers) or of a
  ``CLIPVisionModelWithProjection`` (the image tower only), optionally with the
  ``preprocessor_config.json`` of its ``CLIPImageProcessor``; or
* a hub id such as ``openai/clip-vit-base-patch32`` (the paper's ViT-B/32), read from the local
  hub cache, and downloaded into it only when the hub is reachable and ``HF_HUB_OFFLINE`` is not
  set.

Only the image tower is loaded (``CLIPVisionModelWithProjection`` reads it out of a full
``CLIPModel`` checkpoint too); the embedding is its projected pooled output, the same vector as
``CLIPModel.get_image_features``. Images go through CLIP's own preprocessing (resize, centre
crop, the CLIP mean and std); without a saved processor the standard CLIP processor at the
model's input size is used.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from diffattr.errors import ConfigError
from diffattr.images import channels_last, to_rgb

PROCESSOR_FILE = "preprocessor_config.json"
HOW_TO = (
    "set clip.weights to a folder saved with CLIPModel.save_pretrained (or "
    "CLIPVisionModelWithProjection.save_pretrained), or to a hub id such as "
    "openai/clip-vit-base-patch32 that is in the local hub cache"
)


def unavailable_reason(weights: str | None) -> str | None:
    """Why no CLIP encoder can be loaded from ``weights`` here (with how to fix it); None when it
    can. Cheap: reads no weights (the DAG calls it for every run)."""
    if not weights:
        return f"clip.weights is not set; {HOW_TO}"
    path = Path(weights)
    if path.is_dir():
        if not (path / "config.json").is_file():
            return f"clip.weights = {weights!r} has no config.json; {HOW_TO}"
        return None
    if path.exists() or weights.startswith((".", "/", "~")) or weights.count("/") > 1:
        return f"clip.weights = {weights!r} is not a checkpoint folder; {HOW_TO}"
    if _offline() and _cached_config(weights) is None:
        return (
            f"clip.weights = {weights!r} is not in the local hub cache and HF_HUB_OFFLINE is set; "
            f"download it once online (huggingface-cli download {weights}) or {HOW_TO}"
        )
    return None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _cached_config(repo_id: str) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "config.json")
    return found if isinstance(found, str) else None


def checkpoint_folder(weights: str) -> Path:
    """The local folder of ``weights``: the folder itself, or the hub snapshot (cache first)."""
    reason = unavailable_reason(weights)
    if reason:
        raise ConfigError(f"cannot load CLIP: {reason}")
    if Path(weights).is_dir():
        return Path(weights)
    from huggingface_hub import snapshot_download

    patterns = ["config.json", PROCESSOR_FILE, "*.safetensors"]
    try:
        return Path(snapshot_download(weights, allow_patterns=patterns))
    except Exception as error:  # offline, unknown id, no access: one readable message
        raise ConfigError(
            f"cannot load CLIP checkpoint {weights!r} from the hub or its cache "
            f"({type(error).__name__}: {error}); {HOW_TO}"
        ) from None


def weight_files(folder: Path) -> list[str]:
    """The files that define the encoder (config, processor, weights), for provenance digests."""
    names = ["config.json", PROCESSOR_FILE]
    files = [folder / n for n in names if (folder / n).is_file()]
    files += sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin"))
    return [str(f) for f in files]


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Loading the image tower out of a full CLIP reports every text weight as unexpected."""
    from transformers.utils import logging as hf_logging

    before = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(before)


def _processor_class() -> type:
    """CLIP's image processor; the PIL implementation where torchvision is absent (the default
    class falls back to it then, with a warning)."""
    import importlib.util

    import transformers

    if importlib.util.find_spec("torchvision") is None and hasattr(
        transformers, "CLIPImageProcessorPil"
    ):
        return transformers.CLIPImageProcessorPil
    return transformers.CLIPImageProcessor


class ClipEncoder:
    """``encoder(images)``: float [n, C, H, W] in [-1, 1] (C = 1 or 3) → float32 [n, D]."""

    def __init__(self, weights: str, device: str = "cpu", batch_size: int = 64) -> None:
        import torch
        from transformers import CLIPVisionModelWithProjection

        CLIPImageProcessor = _processor_class()

        self.weights = weights
        self.folder = checkpoint_folder(weights)
        self.device = torch.device(device)
        self.batch_size = batch_size
        with _quiet_transformers():
            self.model = CLIPVisionModelWithProjection.from_pretrained(str(self.folder))
            size = int(self.model.config.image_size)
            if (self.folder / PROCESSOR_FILE).is_file():
                self.processor = CLIPImageProcessor.from_pretrained(str(self.folder))
            else:
                self.processor = CLIPImageProcessor(
                    size={"shortest_edge": size}, crop_size={"height": size, "width": size}
                )
        self.model = self.model.to(self.device).eval()
        self.description = (
            f"transformers CLIPVisionModelWithProjection (image {size}px, "
            f"embedding {self.model.config.projection_dim})"
        )

    def files(self) -> list[str]:
        return weight_files(self.folder)

    def __call__(self, images: np.ndarray, progress: IO[str] | None = None) -> np.ndarray:
        import torch
        from tqdm import tqdm

        pil = to_pil_images(np.asarray(images))
        out = []
        starts = range(0, len(pil), self.batch_size)
        with torch.no_grad():
            for start in tqdm(starts, file=progress, disable=progress is None):
                batch = self.processor(
                    images=pil[start : start + self.batch_size], return_tensors="pt"
                )
                pixels = batch["pixel_values"].to(self.device)
                out.append(self.model(pixel_values=pixels).image_embeds.float().cpu().numpy())
        return np.concatenate(out).astype(np.float32)


def to_pil_images(images: np.ndarray) -> list[Any]:
    """float [n, C, H, W] in [-1, 1] → RGB PIL images (grayscale repeated to three channels)."""
    from PIL import Image

    pixels = channels_last(images)
    if pixels.shape[-1] not in (1, 3):
        raise ConfigError(f"CLIP needs 1- or 3-channel images, got {pixels.shape[-1]} channels")
    return [Image.fromarray(image) for image in to_rgb(pixels)]
