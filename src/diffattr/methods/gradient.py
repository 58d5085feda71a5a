"""Gradient similarity, TracIn and GAS (protocol §5, ``01_tracin``).

* ``grad_dot``: τ = ΨΦᵀ at the final checkpoint; ``grad_cos``: the cosine similarity;
* ``tracin``: the mean of the dot scores over the main run's checkpoints at 25/50/75/100% of
  training; ``gas``: the same mean of the cosine scores. No learning-rate weighting.

The reference saved checkpoints at 0/25/50/75/100% and averaged entries ``[1:]``; on ArtBench-5,
where the 0% entry was commented out, that silently dropped 25% as well (protocol §8.9). Here the
checkpoints are named by their percentage (``main-25``, ``main-50``, ``main-75`` and ``main``
for 100%), ``train_main`` saves them (:mod:`diffattr.snapshots`), and the random
initialisation (0%) is never used.

Features are the projected ones of :mod:`diffattr.features` (the reference also used projected
features here). No ridge λ: one score matrix, stored with λ = 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from diffattr.errors import FeatureMismatchError
from diffattr.files import read_feature_pair
from diffattr.methods.base import (
    NO_LAMBDA,
    Method,
    Need,
    Param,
    ScoreJob,
    features_need,
    method_noise,
    register,
)
from diffattr.methods.trak import (
    OUTPUT_FN_PARAM,
    TIMESTEP_NORM_PARAM,
    check_timestep_norm,
    feature_fn,
)
from diffattr.store import FEATURE_CHECK_KEYS

#: Percent of training at which the main run is saved; 100 is the final model.
CHECKPOINT_PERCENTS = (25, 50, 75, 100)

#: Feature provenance that train and query features of one checkpoint must share.
CHECK_KEYS = FEATURE_CHECK_KEYS


def checkpoint_name(percent: int) -> str:
    """``main`` for the final model, ``main-<percent>`` for an intermediate one."""
    return "main" if int(percent) == 100 else f"main-{int(percent)}"


def _check_checkpoints(value: Any) -> str | None:
    if (
        not isinstance(value, list)
        or not value
        or len(set(value)) != len(value)
        or not set(value) <= set(CHECKPOINT_PERCENTS)
    ):
        return f"must be a non-empty list of distinct values from {list(CHECKPOINT_PERCENTS)}, got {value!r}"
    return None


def similarity(test: np.ndarray, train: np.ndarray, cosine: bool) -> np.ndarray:
    """[n, N] inner products, or cosine similarities (a zero row has similarity 0)."""
    if cosine:
        test, train = _unit_rows(test), _unit_rows(train)
    return test @ train.T


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)


class CheckpointSimilarity(Method):
    """Mean over checkpoints of the dot or cosine similarity of gradient features."""

    cosine: ClassVar[bool] = False
    params = {"output_fn": OUTPUT_FN_PARAM, "timestep_norm": TIMESTEP_NORM_PARAM}

    def checkpoints(self, params: Mapping[str, Any]) -> list[int]:
        return [100]

    def needs(self, params: Mapping[str, Any], K: int, split: str) -> dict[str, list[Need]]:
        fn = feature_fn(params)
        names = [checkpoint_name(p) for p in self.checkpoints(params)]
        return {
            "train": [features_need(name, fn, K, "train", method_noise(params)) for name in names],
            "test": [features_need(name, fn, K, split, method_noise(params)) for name in names],
        }

    def score(self, job: ScoreJob) -> None:
        train_paths, test_paths = job.input("train"), job.input("test")
        check_timestep_norm(train_paths + test_paths, job.params.get("timestep_norm", False))
        total, train_ids, test_ids = None, None, None
        for train_path, test_path in zip(train_paths, test_paths, strict=True):
            train, test = read_feature_pair(train_path, test_path, CHECK_KEYS)
            if train_ids is not None and not (
                np.array_equal(train.ids, train_ids) and np.array_equal(test.ids, test_ids)
            ):
                raise FeatureMismatchError(
                    f"{train_path}: rows differ from the other checkpoints' features"
                )
            train_ids, test_ids = train.ids, test.ids
            scores = similarity(test.features, train.features, self.cosine)
            total = scores if total is None else total + scores
        self.write_score_grid(
            job,
            total / len(train_paths),
            [NO_LAMBDA],
            train_ids,
            test_ids,
            {"checkpoints": [str(p) for p in train_paths]},
        )


class MultiCheckpoint(CheckpointSimilarity):
    params = {
        "output_fn": OUTPUT_FN_PARAM,
        "timestep_norm": TIMESTEP_NORM_PARAM,
        "checkpoints": Param(
            "Percent-of-training checkpoints averaged over (100 = final model).",
            default=list(CHECKPOINT_PERCENTS),
            check=_check_checkpoints,
        ),
    }

    def checkpoints(self, params: Mapping[str, Any]) -> list[int]:
        return sorted(params["checkpoints"])


@register
class GradientDot(CheckpointSimilarity):
    kind = "grad_dot"
    summary = "ΨΦᵀ: dot product of gradient features at the final checkpoint"


@register
class GradientCosine(CheckpointSimilarity):
    kind = "grad_cos"
    summary = "cosine similarity of gradient features at the final checkpoint"
    cosine = True


@register
class TracIn(MultiCheckpoint):
    kind = "tracin"
    summary = "TracIn: gradient dot products averaged over the 25/50/75/100% checkpoints"


@register
class GAS(MultiCheckpoint):
    kind = "gas"
    summary = "GAS: gradient cosine similarities averaged over the 25/50/75/100% checkpoints"
    cosine = True
