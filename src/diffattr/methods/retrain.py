"""Retraining-based baselines fitted on the retrain pool (protocol §5, ``07_emp_infl``, ``08_datamodel``).

Both read the retrain pool's ground truth (``groundtruth/retrain.h5``: masks M [R, N] and the
measured outputs y [R, n] of R models, each trained on its own α-subset) and use the first
``num_models`` models (all by default). They are evaluated by ``evaluate_lds`` on the LDS pool,
a pool drawn with a different seed, so never on the subsets they were fitted on.

* ``empirical_influence`` (Feldman & Zhang): τ[j, i] = mean(y_r[j] | i ∈ S_r) − mean(y_r[j] | i ∉ S_r);
  a row that is in every subset or in none has τ = 0.
* ``datamodels`` (Ilyas et al.): per query j a ridge regression of y_r[j] on the mask rows, with
  an intercept and α chosen per query by K-fold cross-validation (contiguous folds, the mean R²
  over folds, ties to the first α): the reference's ``RidgeCV(alphas=[0.1, 1, 10], cv=5)``,
  solved in closed form for all queries at once. τ[j, :] are the coefficients.

Both are in loss units (τ > 0: including i raises the loss), so their LDS sign is +1. No ridge λ
of the TRAK kind: one score matrix, stored with λ = 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from diffattr.errors import ConfigError
from diffattr.files import GroundTruth, read_groundtruth
from diffattr.methods.base import (
    NO_LAMBDA,
    Method,
    Need,
    Param,
    ScoreJob,
    positive_int,
    positive_numbers,
    register,
)


def _optional_positive_int(value: Any) -> str | None:
    return None if value is None else positive_int(value)


NUM_MODELS_PARAM = Param(
    "R: fit on retrain-pool models 0..R-1 (null = the whole pool).",
    default=None,
    check=_optional_positive_int,
)


def empirical_influence(masks: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """τ [n, N] = mean of y over models trained with row i minus the mean over those without."""
    inside = np.asarray(masks, dtype=np.float64)
    y = np.asarray(outputs, dtype=np.float64)
    count_in = inside.sum(axis=0)
    count_out = inside.shape[0] - count_in
    defined = (count_in > 0) & (count_out > 0)
    mean_in = (inside.T @ y) / np.where(count_in > 0, count_in, 1)[:, None]
    mean_out = ((1 - inside).T @ y) / np.where(count_out > 0, count_out, 1)[:, None]
    return np.where(defined[:, None], mean_in - mean_out, 0.0).T


def ridge_coefficients(
    inputs: np.ndarray, targets: np.ndarray, alphas: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Ridge with intercept for every α and every target column at once.

    Args:
        inputs: X [R, N]; targets: Y [R, n]; alphas: [A] penalties > 0.

    Returns:
        (coef [A, N, n], intercept [A, n]) minimising ‖Y − X coef − 1 b‖² + α‖coef‖².
    """
    x = np.asarray(inputs, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
    xc, yc = x - x_mean, y - y_mean
    grid = np.asarray(alphas, dtype=np.float64)
    if x.shape[1] > x.shape[0]:  # dual: Xcᵀ (XcXcᵀ + αI)⁻¹ Yc
        spectrum, basis = np.linalg.eigh(xc @ xc.T)
        left, right = xc.T @ basis, basis.T @ yc
    else:  # primal: (XcᵀXc + αI)⁻¹ Xcᵀ Yc
        spectrum, basis = np.linalg.eigh(xc.T @ xc)
        left, right = basis, basis.T @ (xc.T @ yc)
    spectrum = np.clip(spectrum, 0.0, None)
    coef = np.stack([(left / (spectrum + alpha)) @ right for alpha in grid])
    intercept = y_mean[None, :] - np.einsum("d,adn->an", x_mean, coef)
    return coef, intercept


def r2_scores(truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """R² per column (sklearn's ``r2_score`` with ``force_finite``): 1 − SSE/SST; [..., n]."""
    residual = ((truth - predicted) ** 2).sum(axis=-2)
    total = ((truth - truth.mean(axis=0)) ** 2).sum(axis=0)
    safe = np.where(total > 0, total, 1.0)
    return np.where(total > 0, 1 - residual / safe, np.where(residual == 0, 1.0, 0.0))


def datamodel_coefficients(
    masks: np.ndarray, outputs: np.ndarray, alphas: Sequence[float], folds: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-query ridge coefficients τ [n, N] with α chosen by K-fold CV, and the chosen α [n]."""
    x = np.asarray(masks, dtype=np.float64)
    y = np.asarray(outputs, dtype=np.float64)
    if not 2 <= folds <= x.shape[0]:
        raise ConfigError(f"cv_folds = {folds} must lie in 2..{x.shape[0]} (the number of models)")
    rows = np.arange(x.shape[0])
    fold_scores = []
    for held in np.array_split(rows, folds):
        kept = np.setdiff1d(rows, held)
        coef, intercept = ridge_coefficients(x[kept], y[kept], alphas)
        predicted = np.einsum("rd,adn->arn", x[held], coef) + intercept[:, None, :]
        fold_scores.append(r2_scores(y[held], predicted))
    best = np.argmax(np.mean(fold_scores, axis=0), axis=0)  # [n]; first α on ties
    coef, _ = ridge_coefficients(x, y, alphas)
    queries = np.arange(y.shape[1])
    return coef[best, :, queries], np.asarray(alphas, dtype=np.float64)[best]


def first_models(truth: GroundTruth, num_models: int | None) -> GroundTruth:
    """The retrain pool's first ``num_models`` models (all for None)."""
    available = truth.masks.shape[0]
    count = available if num_models is None else int(num_models)
    if count > available:
        raise ConfigError(
            f"num_models = {count} but the retrain pool in {truth.path} has only {available} "
            "models; raise subsets.retrain.num_subsets or lower num_models"
        )
    return replace(truth, masks=truth.masks[:count], measured=truth.measured[:count])


class RetrainFit(Method):
    uses_K = False
    lds_sign = 1
    needs_retrain_pool = True

    def retrain_models(self, params: Mapping[str, Any]) -> int:
        return int(params["num_models"] or 0)

    def needs(self, params: Mapping[str, Any], K: int, split: str) -> dict[str, list[Need]]:
        return {"retrain": [Need("groundtruth", {"pool": "retrain"})]}

    def fit(
        self, masks: np.ndarray, measured: np.ndarray, params: Mapping[str, Any]
    ) -> tuple[np.ndarray, dict]:
        raise NotImplementedError

    def score(self, job: ScoreJob) -> None:
        truth = read_groundtruth(job.one_input("retrain"), job.split)
        truth = first_models(truth, job.params["num_models"])
        scores, extra = self.fit(truth.masks, truth.measured, job.params)
        extra["num_models_used"] = int(truth.masks.shape[0])
        self.write_score_grid(job, scores, [NO_LAMBDA], truth.train_ids, truth.ids, extra)


@register
class EmpiricalInfluence(RetrainFit):
    kind = "empirical_influence"
    summary = "mean output with row i minus without it, over retrain-pool models (loss units)"
    params = {"num_models": NUM_MODELS_PARAM}

    def fit(
        self, masks: np.ndarray, measured: np.ndarray, params: Mapping[str, Any]
    ) -> tuple[np.ndarray, dict]:
        return empirical_influence(masks, measured), {}


@register
class Datamodels(RetrainFit):
    kind = "datamodels"
    summary = "per-query ridge regression of retrain-pool outputs on subset masks (loss units)"
    params = {
        "num_models": NUM_MODELS_PARAM,
        "alphas": Param(
            "Ridge penalties tried by cross-validation.", [0.1, 1, 10], positive_numbers
        ),
        "cv_folds": Param("Folds of the cross-validation over models.", 5, positive_int),
    }

    def fit(
        self, masks: np.ndarray, measured: np.ndarray, params: Mapping[str, Any]
    ) -> tuple[np.ndarray, dict]:
        coef, chosen = datamodel_coefficients(masks, measured, params["alphas"], params["cv_folds"])
        values, counts = np.unique(chosen, return_counts=True)
        return coef, {
            "chosen_alphas": {f"{v:g}": int(c) for v, c in zip(values, counts, strict=True)}
        }
