"""Query splits: the images, ids and captions of ``train`` / ``val`` (from the dataset) and
``gen`` (from the generated samples), and their encoding for a model (VAE latents, caption
embeddings). Used by the jobs and by kernels that read a split themselves (EK-FAC, the
similarity baselines)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from diffattr import data
from diffattr.errors import ConfigError
from diffattr.files import read_samples

#: Every split a job can read: ``train`` and ``val`` from the dataset, ``gen`` from the samples.
SPLITS: tuple[str, ...] = ("train", "val", "gen")
#: The splits attributions are evaluated on (``lds.splits``).
QUERY_SPLITS: tuple[str, ...] = ("val", "gen")


@dataclass(frozen=True)
class QueryRows:
    """Rows of a split (a query split, or the train split for features) on their way through a
    model, aligned: ``x0`` [B, ...] (images, or latents of a latent model; a tensor or an
    array), their ``ids``, their conditions ``cond`` (caption embeddings [B, L, D]; None for an
    unconditional model) and the keys of their feature noise ``noise_keys`` (None: the ids;
    :func:`diffattr.noise.feature_noise_keys`, which applies the method's noise scheme).

    Without ``noise_keys`` sample b's noise is keyed by ``ids[b]``, unique only within one
    split (``independent`` keys add the split, so a training row and a query never share noise
    by accident). The measurement, the residual profiles and the gradient-feature kernels take
    their rows as one of these."""

    x0: Any
    ids: Any
    cond: Any = None
    noise_keys: Any = None

    def __post_init__(self) -> None:
        for name in ("ids", "cond", "noise_keys"):
            value = getattr(self, name)
            if value is not None and len(value) != len(self.x0):
                raise ConfigError(
                    f"QueryRows.{name} has {len(value)} rows for the {len(self.x0)} rows of x0"
                )

    def rows(self, start: int, stop: int) -> QueryRows:
        """Rows ``start:stop`` of every field."""
        return QueryRows(
            self.x0[start:stop],
            self.ids[start:stop],
            None if self.cond is None else self.cond[start:stop],
            None if self.noise_keys is None else self.noise_keys[start:stop],
        )


def load_queries(
    split: str, dataset_path: str, samples_path: str | None
) -> tuple[np.ndarray, np.ndarray]:
    """Images and ids of a query split: ``train``/``val`` from the dataset, ``gen`` from samples."""
    if split == "gen":
        if samples_path is None:
            raise ConfigError("split 'gen' needs the generated samples file")
        samples = read_samples(samples_path)
        return samples.images, samples.ids
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
        return read_samples(samples_path, images=False).prompts
    if split not in ("train", "val"):
        raise ConfigError(f"unknown split {split!r}; valid splits: train, val, gen")
    return data.load_split(dataset_path, split, images=False).captions


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
