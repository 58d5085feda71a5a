"""Counterfactual evaluation (protocol §6): does removing a method's top examples change the image?

For a few generated images ("targets") and each attribution method, the training examples with
the highest scores for the target are removed, a model is retrained on the rest with the main
model's hyperparameters and seed, and the target is regenerated from exactly the same initial
noise. The more the regenerated image differs from the original, the more influential the
removed examples were. ``random`` (a built-in method) removes a seeded random k-subset.

Kernels (pure functions, arrays in and out):

* :func:`select_targets`, :func:`resolve_top_k`, :func:`top_k_removal`, :func:`random_scores`;
* :func:`regenerate_sample`: one sample of a generated set, recomputed in its original batch;
* metrics :func:`l2_distance` (of pixels, or of VAE latents for latent models as in the
  paper's ArtBench), :func:`ssim` (Gaussian-window SSIM of Wang et al. 2004) and
  :func:`clip_cosine` (CLIP image embeddings, :class:`diffattr.clip.ClipEncoder`);
* :func:`metric_statistics`, :func:`paired_fractions`, :func:`removal_overlap`.

What a config runs (methods, their K, the targets) is derived at parse time by
:func:`diffattr.plan.resolve_counterfactual`; the file-level jobs are in
:mod:`diffattr.jobs.counterfactual`; the ``summary.md`` section and ``counterfactual.csv`` are
rendered by :mod:`diffattr.summary`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from diffattr.data import subset_size
from diffattr.errors import ConfigError, DataError, FeatureMismatchError

if TYPE_CHECKING:
    from diffattr.files import Generation

logger = logging.getLogger(__name__)

RANDOM = "random"
METRICS = ("l2", "ssim", "clip")
# +1: a larger value means the regeneration changed more; -1: a smaller value does.
CHANGE_DIRECTION = {"l2": 1, "ssim": -1, "clip": -1}
TABLE_COLUMNS = ["method", "metric", "median", "mean", "n_targets"]
PAIRED_COLUMNS = ["metric", "method", "other", "fraction_more_change", "n_targets"]
#: SSIM's Gaussian window (largest size, σ) and constants k1, k2 (Wang et al. 2004)
SSIM_WINDOW, SSIM_SIGMA = 11, 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03

ImageEncoder = Callable[[np.ndarray], np.ndarray]


# --------------------------------------------------------------------------- targets and removals


def select_targets(num_samples: int, num_targets: int, seed: int) -> list[int]:
    """Generated-sample ids to explain: the first ``num_targets`` of a seeded permutation.

    This is the test split of the reference's ``train_test_split(range(num_samples),
    test_size=num_targets, random_state=seed)``, in its order, so the paper's targets are
    reproduced. Raising ``num_targets`` keeps the earlier targets (and their retrained models).
    """
    if not 1 <= num_targets <= num_samples:
        raise ConfigError(
            f"counterfactual.num_targets = {num_targets}; expected 1..{num_samples} "
            "(the number of generated samples)"
        )
    order = np.random.RandomState(seed).permutation(num_samples)
    return [int(i) for i in order[:num_targets]]


def resolve_top_k(n_train: int, top_k: int | None, top_fraction: float) -> int:
    """Rows to remove: ``top_k`` if set, else round(top_fraction × N); must leave rows to train on."""
    k = int(top_k) if top_k is not None else subset_size(n_train, top_fraction)
    if not 1 <= k < n_train:
        source = f"top_k = {top_k}" if top_k is not None else f"top_fraction = {top_fraction}"
        raise DataError(
            f"counterfactual.{source} removes {k} of {n_train} training rows; expected "
            f"1..{n_train - 1}"
        )
    return k


def top_k_removal(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the ``k`` highest scores (ranked, ties to the lower position) and the rest.

    Returns ``(removed, kept)``: ``removed`` in descending score order, ``kept`` sorted.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1 or not np.isfinite(scores).all():
        raise DataError(f"scores of shape {scores.shape} must be a finite 1-D vector")
    if not 1 <= k < scores.size:
        raise DataError(f"cannot remove {k} of {scores.size} rows; expected 1..{scores.size - 1}")
    removed = np.argsort(-scores, kind="stable")[:k].astype(np.int64)
    kept = np.setdiff1d(np.arange(scores.size, dtype=np.int64), removed)
    return removed, kept


def random_scores(n_train: int, seed: int, target: int) -> np.ndarray:
    """Uniform scores of the ``random`` baseline for one target: row ``target`` of the
    reference's ``np.random.seed(seed); np.random.rand(num_samples, N)``, drawn row by row."""
    stream = np.random.RandomState(seed)
    for _ in range(target):
        stream.random_sample(n_train)
    return stream.random_sample(n_train)


# --------------------------------------------------------------------------- regeneration


def regenerate_sample(
    model: Any,
    seeds: np.ndarray,
    index: int,
    generation: Generation,
    prompts: Sequence[str] | None = None,
) -> np.ndarray:
    """Sample ``index`` of a generated set [C, H, W], recomputed inside its original batch.

    ``generation`` is the set's generation record (steps, eta, guidance and the batch size it
    was generated in). Batched CPU convolutions round differently from single-sample ones (the
    last bits of a sample depend on the batch it was in), so the batch of ``batch_size`` seeds
    (and prompts) that held the sample in the original generation is recomputed: with the
    original model this reproduces the stored sample bit for bit; its cost is one generation
    batch.
    """
    from diffattr.sampling import DdimSettings, generate

    steps, eta, batch_size = generation.steps, generation.eta, generation.batch_size
    guidance_scale = generation.guidance_scale
    start = (index // batch_size) * batch_size
    chunk = np.asarray(seeds)[start : start + batch_size]
    chunk_prompts = None if prompts is None else list(prompts[start : start + batch_size])
    ddim = DdimSettings(steps=steps, eta=eta, guidance_scale=guidance_scale, batch_size=batch_size)
    result = generate(model, chunk, ddim, chunk_prompts)
    return result["images"][index - start]


# --------------------------------------------------------------------------- metrics


def _pair(original: np.ndarray, regenerated: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(original, dtype=np.float64)
    b = np.asarray(regenerated, dtype=np.float64)
    if a.shape != b.shape:
        raise FeatureMismatchError(
            f"original {a.shape} and regenerated {b.shape} images differ in shape"
        )
    return a, b


def l2_distance(original: np.ndarray, regenerated: np.ndarray) -> float:
    """ℓ2 norm of the difference of two flattened images (pixels in [-1, 1], or latents)."""
    a, b = _pair(original, regenerated)
    return float(np.sqrt(np.sum((a - b) ** 2)))


def gaussian_window(size: int, sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian weights of odd length ``size``."""
    offsets = np.arange(size, dtype=np.float64) - (size - 1) / 2
    weights = np.exp(-(offsets**2) / (2 * sigma**2))
    return weights / weights.sum()


def _filter_valid(image: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of a 2-D image with ``outer(weights, weights)``."""
    view = np.lib.stride_tricks.sliding_window_view
    rows = view(image, weights.size, axis=1) @ weights
    return view(rows, weights.size, axis=0) @ weights


def ssim(original: np.ndarray, regenerated: np.ndarray, data_range: float = 2.0) -> float:
    """Mean structural similarity (Wang et al. 2004) of two images [C, H, W] or [H, W].

    Gaussian window (σ = 1.5, 11×11 or the largest odd size that fits the image), local
    statistics weighted by the window over 'valid' positions only, constants (k·L)² with
    k = 0.01, 0.03 and L = ``data_range`` (2 for images in [-1, 1]); the map is averaged over
    positions and channels.
    """
    a, b = _pair(original, regenerated)
    if a.ndim == 2:
        a, b = a[None], b[None]
    if a.ndim != 3:
        raise DataError(f"SSIM needs images [C, H, W] or [H, W]; got shape {a.shape}")
    size = min(SSIM_WINDOW, a.shape[1], a.shape[2])
    size -= 1 - size % 2
    if size < 1:
        raise DataError(f"images of shape {a.shape} are too small for SSIM")
    weights = gaussian_window(size, SSIM_SIGMA)
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    maps = []
    for x, y in zip(a, b, strict=True):
        mu_x, mu_y = _filter_valid(x, weights), _filter_valid(y, weights)
        var_x = _filter_valid(x * x, weights) - mu_x**2
        var_y = _filter_valid(y * y, weights) - mu_y**2
        cov = _filter_valid(x * y, weights) - mu_x * mu_y
        maps.append(
            ((2 * mu_x * mu_y + c1) * (2 * cov + c2))
            / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
        )
    return float(np.mean(maps))


def clip_cosine(original: np.ndarray, regenerated: np.ndarray, encode: ImageEncoder) -> float:
    """Cosine similarity of the two images' embeddings under ``encode`` ([n,C,H,W] -> [n, D])."""
    a, b = _pair(original, regenerated)
    embeddings = np.asarray(encode(np.stack([a, b]).astype(np.float32)), dtype=np.float64)
    first, second = embeddings
    return float(first @ second / (np.linalg.norm(first) * np.linalg.norm(second)))


def compare_images(
    original: np.ndarray,
    regenerated: np.ndarray,
    metrics: Sequence[str],
    encode: ImageEncoder | None = None,
) -> dict[str, float]:
    """Every requested metric of one (original, regenerated) pair; ``clip`` needs ``encode``."""
    values = {}
    for metric in metrics:
        if metric == "l2":
            values[metric] = l2_distance(original, regenerated)
        elif metric == "ssim":
            values[metric] = ssim(original, regenerated)
        elif metric == "clip":
            if encode is None:
                raise ConfigError("the clip metric needs an image encoder (clip.weights)")
            values[metric] = clip_cosine(original, regenerated, encode)
        else:
            raise ConfigError(f"unknown counterfactual metric {metric!r}; valid: {list(METRICS)}")
    return values


# --------------------------------------------------------------------------- aggregates


def metric_statistics(values: Mapping[str, Mapping[str, Sequence[float]]]) -> list[dict[str, Any]]:
    """Rows (method, metric, median, mean, n_targets) from values[method][metric] per target."""
    rows = []
    for method, by_metric in values.items():
        for metric, series in by_metric.items():
            array = np.asarray(series, dtype=np.float64)
            rows.append(
                {
                    "method": method,
                    "metric": metric,
                    "median": float(np.median(array)),
                    "mean": float(np.mean(array)),
                    "n_targets": int(array.size),
                }
            )
    return rows


def paired_fractions(
    values: Mapping[str, Mapping[str, Sequence[float]]], methods: Sequence[str]
) -> list[dict[str, Any]]:
    """For each metric and each pair (A, B) of methods in order, the fraction of targets where
    removing A's top examples changed the image strictly more than removing B's."""
    rows = []
    metrics = list(next(iter(values.values()))) if values else []
    for metric in metrics:
        direction = CHANGE_DIRECTION[metric]
        for i, method in enumerate(methods):
            for other in methods[i + 1 :]:
                a = direction * np.asarray(values[method][metric], dtype=np.float64)
                b = direction * np.asarray(values[other][metric], dtype=np.float64)
                rows.append(
                    {
                        "metric": metric,
                        "method": method,
                        "other": other,
                        "fraction_more_change": float(np.mean(a > b)),
                        "n_targets": int(a.size),
                    }
                )
    return rows


def jaccard(first: np.ndarray, second: np.ndarray) -> float:
    a, b = set(np.asarray(first).tolist()), set(np.asarray(second).tolist())
    return len(a & b) / len(a | b) if a | b else 1.0


def removal_overlap(
    removed: Mapping[str, Mapping[int, np.ndarray]], methods: Sequence[str]
) -> list[dict[str, Any]]:
    """Mean Jaccard overlap of two methods' removal sets over the targets, for every pair."""
    rows = []
    for i, method in enumerate(methods):
        for other in methods[i + 1 :]:
            targets = sorted(removed[method])
            overlaps = [jaccard(removed[method][t], removed[other][t]) for t in targets]
            rows.append(
                {"method": method, "other": other, "mean_jaccard": float(np.mean(overlaps))}
            )
    return rows
