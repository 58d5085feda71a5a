"""Linear datamodeling score (LDS), its bootstrap, the noise ceiling and the choice of λ.

Notation (protocol §3):

* masks ``M`` [S, N] bool: subset s contains training row i (rows in train-index order);
* measured outputs ``y`` [S, n]: the loss of the model(s) trained on subset s at query j;
* scores ``τ`` [n, N]: τ[j, i] > 0 means training row i supports query j.

The prediction for subset s and query j is ``pred[s, j] = Σ_i M[s, i] · sign · τ[j, i]`` with
``sign = -1`` by default: the outputs are losses and supportive examples lower them. Methods whose
scores are already in loss units (empirical influence, datamodels) use ``sign = +1``.
``LDS = mean over j of Spearman(pred[:, j], y[:, j])``, each correlation taken across subsets.

A query whose prediction or measured output is constant across subsets has an undefined
Spearman correlation (NaN, as in scipy). Means use ``nanmean``; :func:`lds` warns with the count
and :func:`lds_summary` returns it.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from diffattr.errors import ConfigError, DataError, FeatureMismatchError

# --------------------------------------------------------------------------- Spearman


def _ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks per column, centred, as float64."""
    from scipy.stats import rankdata  # imported here: every job imports this module (0.8 s)

    ranks = rankdata(values, axis=0).astype(np.float64)
    return ranks - ranks.mean(axis=0, keepdims=True)


def _pearson_centred(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Column-wise Pearson correlation of two column-centred rank matrices; NaN if constant."""
    numerator = np.einsum("sj,sj->j", a, b)
    sum_sq_a, sum_sq_b = np.einsum("sj,sj->j", a, a), np.einsum("sj,sj->j", b, b)
    # Centred ranks of a non-constant column have a sum of squares >= 0.5; below that the
    # column is constant and only round-off is left.
    defined = (sum_sq_a > 0.25) & (sum_sq_b > 0.25)
    result = np.full(numerator.shape, np.nan)
    np.divide(numerator, np.sqrt(sum_sq_a * sum_sq_b), out=result, where=defined)
    return np.clip(result, -1.0, 1.0)


def spearman_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman correlation of each column of ``a`` [S, n] with the same column of ``b``.

    Ties get average ranks (``scipy.stats.rankdata``); a constant column gives NaN, as
    ``scipy.stats.spearmanr`` does.
    """
    a = _finite_2d(a, "a")
    b = _finite_2d(b, "b")
    if a.shape != b.shape:
        raise FeatureMismatchError(
            f"spearman_columns needs two matrices of the same shape [S, n]; got a {a.shape} and "
            f"b {b.shape}"
        )
    _check_subsets(a.shape[0])
    return _pearson_centred(_ranks(a), _ranks(b))


def _finite_2d(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2:
        raise DataError(f"{name} must be a 2-D matrix, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise DataError(
            f"{name} has {int((~np.isfinite(array)).sum())} non-finite value(s) (NaN/inf); "
            "scores and measured outputs must be finite"
        )
    return array


def _check_subsets(count: int) -> None:
    if count < 2:
        raise DataError(
            f"a Spearman correlation across subsets needs at least 2 subsets, got {count}"
        )


# --------------------------------------------------------------------------- inputs


def _check_sign(sign: int) -> float:
    if sign not in (-1, 1):
        raise ConfigError(
            f"sign must be -1 (scores that lower the loss, e.g. TRAK) or +1 (scores in loss "
            f"units, e.g. empirical influence), got {sign!r}"
        )
    return float(sign)


def _check_masks(masks: Any) -> np.ndarray:
    array = np.asarray(masks)
    if array.ndim != 2:
        raise DataError(f"masks must be a 2-D [S, N] matrix, got shape {array.shape}")
    if array.dtype != bool:
        if not np.isin(array, (0, 1)).all():
            raise DataError(
                "masks must be boolean or 0/1 [S, N] (subset s contains training row i); found "
                f"values {np.unique(array)[:10].tolist()}"
            )
    _check_subsets(array.shape[0])
    return array.astype(np.float64)


def _check_inputs(
    score_shape: tuple[int, ...], masks: Any, measured: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Validated float64 masks [S, N] and measured [S, n] for scores of shape [..., n, N]."""
    mask_matrix = _check_masks(masks)
    outputs = _finite_2d(measured, "measured")
    n_test, n_train = score_shape[-2], score_shape[-1]
    if mask_matrix.shape[1] != n_train:
        raise FeatureMismatchError(
            f"masks {mask_matrix.shape} [S, N] and scores {score_shape} [..., n, N] disagree on "
            f"the number of training rows ({mask_matrix.shape[1]} vs {n_train})"
        )
    if outputs.shape[0] != mask_matrix.shape[0]:
        raise FeatureMismatchError(
            f"measured {outputs.shape} [S, n] and masks {mask_matrix.shape} [S, N] disagree on "
            f"the number of subsets ({outputs.shape[0]} vs {mask_matrix.shape[0]})"
        )
    if outputs.shape[1] != n_test:
        raise FeatureMismatchError(
            f"measured {outputs.shape} [S, n] and scores {score_shape} [..., n, N] disagree on "
            f"the number of queries ({outputs.shape[1]} vs {n_test})"
        )
    return mask_matrix, outputs


def _score_matrix(scores: Any, name: str = "scores") -> np.ndarray:
    matrix = np.asarray(scores, dtype=np.float64)
    if matrix.ndim != 2:
        raise DataError(f"{name} must be a 2-D [n, N] matrix, got shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise DataError(
            f"{name} has {int((~np.isfinite(matrix)).sum())} non-finite value(s) (NaN/inf)"
        )
    return matrix


def predictions(scores: np.ndarray, masks: np.ndarray, sign: int = -1) -> np.ndarray:
    """``pred[s, j] = Σ_i M[s, i] · sign · τ[j, i]`` as float64 [S, n]."""
    factor = _check_sign(sign)
    matrix = _score_matrix(scores)
    mask_matrix = _check_masks(masks)
    if mask_matrix.shape[1] != matrix.shape[1]:
        raise FeatureMismatchError(
            f"masks {mask_matrix.shape} [S, N] and scores {matrix.shape} [n, N] disagree on N"
        )
    return factor * (mask_matrix @ matrix.T)


# --------------------------------------------------------------------------- LDS


def lds_per_sample(
    scores: np.ndarray, masks: np.ndarray, measured: np.ndarray, sign: int = -1
) -> np.ndarray:
    """Spearman correlation per query, float64 [n] (NaN where undefined)."""
    factor = _check_sign(sign)
    matrix = _score_matrix(scores)
    mask_matrix, outputs = _check_inputs(matrix.shape, masks, measured)
    return _pearson_centred(_ranks(factor * (mask_matrix @ matrix.T)), _ranks(outputs))


def summarise(per_sample: np.ndarray) -> dict[str, Any]:
    """``nanmean`` of per-query correlations with the number of NaN queries."""
    values = np.asarray(per_sample, dtype=np.float64)
    n_nan = int(np.isnan(values).sum())
    mean = float(np.nanmean(values)) if n_nan < values.size else float("nan")
    return {"lds": mean, "n_samples": int(values.size), "n_nan": n_nan}


def lds_summary(
    scores: np.ndarray, masks: np.ndarray, measured: np.ndarray, sign: int = -1
) -> dict[str, Any]:
    """LDS with its bookkeeping: ``lds``, ``n_samples``, ``n_nan`` and ``per_sample`` [n]."""
    per_sample = lds_per_sample(scores, masks, measured, sign)
    return {**summarise(per_sample), "per_sample": per_sample}


def lds(scores: np.ndarray, masks: np.ndarray, measured: np.ndarray, sign: int = -1) -> float:
    """Mean over queries of the per-query Spearman correlation (``nanmean``).

    Warns (``RuntimeWarning``) with the count when some queries have an undefined correlation.
    """
    summary = summarise(lds_per_sample(scores, masks, measured, sign))
    _warn_nan(summary, "lds")
    return summary["lds"]


def _warn_nan(summary: dict[str, Any], where: str) -> None:
    if summary["n_nan"]:
        warnings.warn(
            f"{where}: {summary['n_nan']} of {summary['n_samples']} queries have a constant "
            "prediction or measured output across subsets (Spearman undefined); they are left "
            "out of the mean",
            RuntimeWarning,
            stacklevel=3,
        )


def lds_grid_per_sample(
    score_grid: Any, masks: np.ndarray, measured: np.ndarray, sign: int = -1
) -> np.ndarray:
    """Per-query LDS for every λ of a score grid, float64 [L, n].

    ``score_grid`` is [L, n, N]: an array or an ``h5py`` dataset, read one λ at a time. The ranks
    of ``measured`` are computed once; each λ costs one [S, N] × [N, n] product.
    """
    factor = _check_sign(sign)
    shape = tuple(score_grid.shape)
    if len(shape) != 3:
        raise DataError(f"score_grid must be [L, n, N], got shape {shape}")
    mask_matrix, outputs = _check_inputs(shape, masks, measured)
    measured_ranks = _ranks(outputs)
    result = np.empty((shape[0], shape[1]), dtype=np.float64)
    for index in range(shape[0]):
        matrix = _score_matrix(score_grid[index], f"score_grid[{index}]")
        prediction_ranks = _ranks(factor * (mask_matrix @ matrix.T))
        result[index] = _pearson_centred(prediction_ranks, measured_ranks)
    return result


def lds_from_predictions(predictions: Any, measured: np.ndarray) -> np.ndarray:
    """Per-query LDS [L, n] from subset predictions [L, S, n] (or [S, n], giving [1, n]).

    ``predictions`` already carry the sign (``sign · M τᵀ``), as
    :meth:`diffattr.spectral.GridScores.predictions` returns them, so that the whole λ grid
    is evaluated without a score matrix per λ.
    """
    stack = np.asarray(predictions, dtype=np.float64)
    if stack.ndim == 2:
        stack = stack[None]
    outputs = _finite_2d(measured, "measured")
    if stack.ndim != 3 or stack.shape[1:] != outputs.shape:
        raise FeatureMismatchError(
            f"predictions {stack.shape} [L, S, n] and measured {outputs.shape} [S, n] disagree"
        )
    _check_subsets(outputs.shape[0])
    measured_ranks = _ranks(outputs)
    result = np.empty((stack.shape[0], stack.shape[2]), dtype=np.float64)
    for index in range(stack.shape[0]):
        prediction = _finite_2d(stack[index], f"predictions[{index}]")
        result[index] = _pearson_centred(_ranks(prediction), measured_ranks)
    return result


def lds_for_grid(
    score_grid: Any, masks: np.ndarray, measured: np.ndarray, sign: int = -1
) -> np.ndarray:
    """LDS (``nanmean`` over queries) for every λ of a score grid [L, n, N], float64 [L]."""
    per_sample = lds_grid_per_sample(score_grid, masks, measured, sign)
    summaries = [summarise(row) for row in per_sample]
    for summary in summaries:
        _warn_nan(summary, "lds_for_grid")
    return np.array([summary["lds"] for summary in summaries], dtype=np.float64)


# --------------------------------------------------------------------------- uncertainty


def bootstrap_lds(
    scores: np.ndarray,
    masks: np.ndarray,
    measured: np.ndarray,
    n_resamples: int = 64,
    seed: int = 42,
    sign: int = -1,
) -> dict[str, Any]:
    """Bootstrap the LDS over subsets: resample the S subsets with replacement, recompute.

    The reference used ``scipy.stats.bootstrap`` (BCa interval, ``n_resamples=64``,
    ``random_state=42``) and tabulated the mean ± std of the bootstrap distribution. Here the
    interval is the plain **percentile** interval (2.5 / 97.5 percentiles of the resampled LDS),
    drawn with ``numpy.random.default_rng(seed)``; ``std`` is ``np.std`` (ddof = 0) of the
    resampled values, as the reference's ``res.bootstrap_distribution.std()``. The resampled
    values therefore differ from the reference's draws even for the same seed.

    Returns:
        dict with ``mean``, ``std``, ``ci_low``, ``ci_high`` (of the bootstrap distribution),
        ``samples`` [n_resamples], the full-sample ``point`` estimate, ``n_resamples``, ``seed``
        and ``method`` (``"percentile"``).
    """
    factor = _check_sign(sign)
    matrix = _score_matrix(scores)
    mask_matrix, outputs = _check_inputs(matrix.shape, masks, measured)
    return bootstrap_predictions(factor * (mask_matrix @ matrix.T), outputs, n_resamples, seed)


def bootstrap_predictions(
    prediction: np.ndarray, measured: np.ndarray, n_resamples: int = 64, seed: int = 42
) -> dict[str, Any]:
    """:func:`bootstrap_lds` from the subset predictions [S, n] (sign included)."""
    if int(n_resamples) < 2:
        raise ConfigError(f"n_resamples must be an integer >= 2, got {n_resamples!r}")
    prediction = _finite_2d(prediction, "prediction")
    outputs = _finite_2d(measured, "measured")
    if prediction.shape != outputs.shape:
        raise FeatureMismatchError(
            f"prediction {prediction.shape} and measured {outputs.shape} must both be [S, n]"
        )
    _check_subsets(outputs.shape[0])
    point = summarise(_pearson_centred(_ranks(prediction), _ranks(outputs)))["lds"]
    rng = np.random.default_rng(seed)
    n_subsets = prediction.shape[0]
    samples = np.empty(int(n_resamples), dtype=np.float64)
    for index in range(samples.size):
        rows = rng.integers(0, n_subsets, size=n_subsets)
        per_sample = _pearson_centred(_ranks(prediction[rows]), _ranks(outputs[rows]))
        samples[index] = summarise(per_sample)["lds"]
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        raise DataError(
            "every bootstrap resample gave an undefined LDS (constant predictions or outputs)"
        )
    return {
        "mean": float(finite.mean()),
        "std": float(finite.std()),
        "ci_low": float(np.percentile(finite, 2.5)),
        "ci_high": float(np.percentile(finite, 97.5)),
        "samples": samples,
        "point": point,
        "n_resamples": int(n_resamples),
        "seed": seed,
        "method": "percentile",
    }


def noise_ceiling(measured_by_seed: np.ndarray) -> dict[str, Any]:
    """How well one training seed's outputs predict another's, and the LDS that seed noise
    leaves attainable against the R-seed mean the LDS is computed on.

    With y_s = f + e_s (independent seed noise), r = corr(y_a, y_b) is the reliability of one
    seed, the R-seed mean has reliability R·r / (1 + (R−1)·r) (Spearman–Brown), and no
    predictor correlates with that mean better than its square root. ``attainable`` applies
    this per query (r_j clipped at 0) and averages; it uses Spearman correlations in place of
    Pearson ones, so it is a guide, not a bound.

    Args:
        measured_by_seed: [R, S, n] measured outputs of R >= 2 training seeds.

    Returns:
        dict with ``mean`` (over unordered seed pairs a < b of the mean over queries of
        Spearman(y_a[:, j], y_b[:, j])), ``per_pair`` [R(R-1)/2], ``pairs`` [(a, b), ...],
        ``attainable`` and ``seeds`` (R).
    """
    outputs = np.asarray(measured_by_seed, dtype=np.float64)
    if outputs.ndim != 3:
        raise DataError(
            f"measured_by_seed must be [R seeds, S subsets, n queries], got shape {outputs.shape}"
        )
    if outputs.shape[0] < 2:
        raise ConfigError(
            f"the noise ceiling needs outputs from at least two training seeds, got "
            f"{outputs.shape[0]} (shape {outputs.shape})"
        )
    if not np.isfinite(outputs).all():
        raise DataError(f"measured_by_seed has {int((~np.isfinite(outputs)).sum())} NaN/inf values")
    _check_subsets(outputs.shape[1])
    ranks = [_ranks(outputs[seed]) for seed in range(outputs.shape[0])]
    pairs = [(a, b) for a in range(len(ranks)) for b in range(a + 1, len(ranks))]
    per_query = np.array([_pearson_centred(ranks[a], ranks[b]) for a, b in pairs])  # [P, n]
    per_pair = np.array([summarise(row)["lds"] for row in per_query])
    seeds = len(ranks)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN queries stay NaN
        r = np.clip(np.nanmean(per_query, axis=0), 0.0, None)
    attainable = np.sqrt(seeds * r / (1 + (seeds - 1) * r))
    return {
        "mean": float(np.nanmean(per_pair)),
        "per_pair": per_pair,
        "pairs": pairs,
        "attainable": float(np.nanmean(attainable)),
        "seeds": seeds,
    }


# --------------------------------------------------------------------------- λ selection

#: ``lds.gen_lambda``: the gen split takes the λ of the ``val`` held-out curve, or of its ``own``.
GEN_LAMBDA_RULES: tuple[str, ...] = ("val", "own")


def choose_lambda(
    lds_curve_heldout: Sequence[float] | np.ndarray, lambdas: Sequence[float] | np.ndarray
) -> tuple[int, float]:
    """Index and value of the λ with the best held-out LDS; ties go to the smallest λ.

    NaN entries of the curve are ignored.
    """
    curve = np.asarray(lds_curve_heldout, dtype=np.float64)
    grid = np.asarray(lambdas, dtype=np.float64)
    if curve.ndim != 1 or curve.shape != grid.shape or curve.size == 0:
        raise FeatureMismatchError(
            f"the LDS curve {curve.shape} and the λ grid {grid.shape} must be non-empty 1-D "
            "vectors of the same length"
        )
    valid = ~np.isnan(curve)
    if not valid.any():
        raise DataError("every LDS value on the λ curve is NaN; no λ can be chosen")
    best = np.max(curve[valid])
    candidates = np.nonzero(valid & (curve == best))[0]
    index = int(candidates[np.argmin(grid[candidates])])
    return index, float(grid[index])


# --------------------------------------------------------------------------- honest λ from curves
#
# Everything below works on *curves*: per-query correlations [L, n] for each λ of the grid,
# from :func:`lds_grid_per_sample` (or any faster producer of the same numbers).


def crossfit_folds(num_subsets: int, folds: int = 2) -> list[np.ndarray]:
    """Subset indices of each cross-fitting fold: subset s goes to fold ``s mod folds``.

    The benchmark subsets are independent random draws, so interleaving is a random split; all
    training seeds of a subset stay in its fold (the measured outputs are per subset).
    """
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ConfigError(f"cross-fitting needs an integer number of folds >= 2, got {folds!r}")
    if num_subsets < 2 * folds:
        raise DataError(
            f"cross-fitting over {folds} folds needs at least {2 * folds} benchmark subsets "
            f"(2 per fold for a Spearman correlation), got {num_subsets}"
        )
    return [np.arange(fold, num_subsets, folds) for fold in range(folds)]


def lds_grid_per_sample_rows(
    score_grid: Any,
    masks: np.ndarray,
    measured: np.ndarray,
    row_sets: Sequence[np.ndarray],
    sign: int = -1,
) -> list[np.ndarray]:
    """Per-query LDS [L, n] for every λ, once for each set of benchmark subsets (rows of
    ``masks``/``measured``) in ``row_sets``; each λ's predictions are formed once."""
    factor = _check_sign(sign)
    shape = tuple(score_grid.shape)
    if len(shape) != 3:
        raise DataError(f"score_grid must be [L, n, N], got shape {shape}")
    mask_matrix, outputs = _check_inputs(shape, masks, measured)
    rows = [np.asarray(r, dtype=np.int64) for r in row_sets]
    for r in rows:
        _check_subsets(r.size)
    measured_ranks = [_ranks(outputs[r]) for r in rows]
    result = [np.empty((shape[0], shape[1]), dtype=np.float64) for _ in rows]
    for index in range(shape[0]):
        matrix = _score_matrix(score_grid[index], f"score_grid[{index}]")
        prediction = factor * (mask_matrix @ matrix.T)
        for out, r, ranks in zip(result, rows, measured_ranks, strict=True):
            out[index] = _pearson_centred(_ranks(prediction[r]), ranks)
    return result


def curve_mean(per_sample_curve: np.ndarray) -> np.ndarray:
    """LDS curve [L] (``nanmean`` over queries) of a per-query curve [L, n]; NaN where all are."""
    curve = np.asarray(per_sample_curve, dtype=np.float64)
    if curve.ndim != 2:
        raise DataError(f"a per-query LDS curve must be [L, n], got shape {curve.shape}")
    return np.array([summarise(row)["lds"] for row in curve], dtype=np.float64)


def crossfit_choice(
    fold_curves: Sequence[np.ndarray], lambdas: Sequence[float] | np.ndarray
) -> dict[str, Any]:
    """Cross-fitted λ: for each fold f, choose λ on the other folds, evaluate on fold f.

    ``fold_curves[f]`` is the per-query LDS [L, n] on fold f's subsets (:func:`crossfit_folds`).
    λ for fold f maximises the mean of the other folds' LDS curves (:func:`choose_lambda`); the
    result is fold f's LDS at that λ. Nothing is evaluated on the subsets its λ was chosen on,
    and no subset beyond the benchmark is needed. Each fold's LDS is a Spearman over fewer
    subsets than the full benchmark, so it is noisier than a full-benchmark number.

    Returns ``lds`` (mean over folds), ``per_fold`` LDS, ``lambdas`` and ``lambda_indices``
    (the λ chosen for each fold) and ``at_grid_edge`` (any choice at the first or last λ).
    """
    curves = [curve_mean(c) for c in fold_curves]
    grid = np.asarray(lambdas, dtype=np.float64)
    if len(curves) < 2:
        raise ConfigError(f"cross-fitting needs at least 2 fold curves, got {len(curves)}")
    per_fold, indices = [], []
    for fold, curve in enumerate(curves):
        others = np.array([c for g, c in enumerate(curves) if g != fold])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # λ where every other fold is NaN
            choosing = np.nanmean(others, axis=0)
        index, _ = choose_lambda(choosing, grid)
        indices.append(index)
        per_fold.append(float(curve[index]))
    return {
        "lds": float(np.nanmean(per_fold)),
        "per_fold": per_fold,
        "lambdas": [float(grid[i]) for i in indices],
        "lambda_indices": indices,
        "at_grid_edge": any(i in (0, grid.size - 1) for i in indices),
    }


def at_grid_edge(index: int, num_lambdas: int) -> bool:
    """Whether a chosen λ is the first or last of the grid (the optimum may lie beyond it)."""
    return num_lambdas > 1 and index in (0, num_lambdas - 1)


# --------------------------------------------------------------------------- paired comparisons


def paired_bootstrap(
    prediction_a: np.ndarray,
    prediction_b: np.ndarray,
    measured: np.ndarray,
    n_resamples: int = 1000,
    seed: int = 42,
) -> dict[str, Any]:
    """Bootstrap of LDS(a) − LDS(b) for two methods on the same subsets and queries.

    ``prediction_a``/``prediction_b`` are [S, n] LDS predictions (sign applied, as
    :func:`predictions`) and ``measured`` the [S, n] outputs. Each resample draws S subsets and
    n queries with replacement, the same draw for both methods, so what the two share (which
    subsets and queries happened to be drawn) cancels in the difference.

    Returns ``point`` (the full-sample difference), ``mean``, ``std``, ``ci_low``/``ci_high``
    (2.5 / 97.5 percentiles), ``n_resamples`` and ``seed``.
    """
    a, b = _finite_2d(prediction_a, "prediction_a"), _finite_2d(prediction_b, "prediction_b")
    y = _finite_2d(measured, "measured")
    if not a.shape == b.shape == y.shape:
        raise FeatureMismatchError(
            f"paired predictions {a.shape}, {b.shape} and measured {y.shape} must all be [S, n]"
        )
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int) or n_resamples < 2:
        raise ConfigError(f"n_resamples must be an integer >= 2, got {n_resamples!r}")
    _check_subsets(a.shape[0])

    def difference(rows: np.ndarray, cols: np.ndarray) -> float:
        ranks = _ranks(y[np.ix_(rows, cols)])
        lds_a = _pearson_centred(_ranks(a[np.ix_(rows, cols)]), ranks)
        lds_b = _pearson_centred(_ranks(b[np.ix_(rows, cols)]), ranks)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return float(np.nanmean(lds_a) - np.nanmean(lds_b))

    n_subsets, n_queries = a.shape
    point = difference(np.arange(n_subsets), np.arange(n_queries))
    rng = np.random.default_rng(seed)
    samples = np.array(
        [
            difference(rng.integers(0, n_subsets, n_subsets), rng.integers(0, n_queries, n_queries))
            for _ in range(n_resamples)
        ]
    )
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        raise DataError("every paired bootstrap resample gave an undefined LDS difference")
    return {
        "point": point,
        "mean": float(finite.mean()),
        "std": float(finite.std()),
        "ci_low": float(np.percentile(finite, 2.5)),
        "ci_high": float(np.percentile(finite, 97.5)),
        "n_resamples": int(n_resamples),
        "seed": seed,
    }


# --------------------------------------------------------------------------- what the ceiling is made of


def shared_component(measured: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split measured outputs [S, n] into a model-level part shared by every query and the rest.

    Each query's outputs are standardised across subsets; the shared part of subset s is the
    mean over queries of those standard scores (a model trained on subset s being better or
    worse overall), and the per-query part is what is left. Returns (shared [S], residual
    [S, n] in standard units).
    """
    y = _finite_2d(measured, "measured")
    _check_subsets(y.shape[0])
    std = y.std(axis=0, keepdims=True)
    z = (y - y.mean(axis=0, keepdims=True)) / np.where(std > 0, std, 1.0)
    shared = z.mean(axis=1)
    return shared, z - shared[:, None]


def ceiling_decomposition(measured_by_seed: np.ndarray) -> dict[str, Any]:
    """How much of the measured outputs is one model-level effect shared by every query.

    Args:
        measured_by_seed: [R, S, n] outputs of R training seeds (R >= 1).

    Returns ``shared_fraction`` (the share of the across-subset variance of the seed-mean
    outputs, per query in standard units, that the shared part explains), ``shared_by_query``
    (mean over queries of Spearman(y_j, shared) across subsets: how much of a per-query
    ranking the shared part alone decides) and, for R >= 2, the seed-to-seed Spearman of the
    shared part (``shared_seed_to_seed``, across subsets) and of the per-query part
    (``residual_seed_to_seed``, mean over queries) — the ceiling of :func:`noise_ceiling`
    taken apart.
    """
    outputs = np.asarray(measured_by_seed, dtype=np.float64)
    if outputs.ndim != 3:
        raise DataError(f"measured_by_seed must be [R, S, n], got shape {outputs.shape}")
    mean = outputs.mean(axis=0)
    shared, residual = shared_component(mean)
    total = residual + shared[:, None]
    fraction = float((shared**2).sum() * total.shape[1] / max((total**2).sum(), 1e-300))
    by_query = spearman_columns(np.repeat(shared[:, None], mean.shape[1], axis=1), mean)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result: dict[str, Any] = {
            "shared_fraction": fraction,
            "shared_by_query": float(np.nanmean(by_query)),
            "seeds": int(outputs.shape[0]),
        }
    if outputs.shape[0] >= 2:
        parts = [shared_component(outputs[r]) for r in range(outputs.shape[0])]
        pairs = [(a, b) for a in range(len(parts)) for b in range(a + 1, len(parts))]
        shared_r = [
            float(spearman_columns(parts[a][0][:, None], parts[b][0][:, None])[0]) for a, b in pairs
        ]
        residual_r = [
            float(np.nanmean(spearman_columns(parts[a][1], parts[b][1]))) for a, b in pairs
        ]
        result["shared_seed_to_seed"] = float(np.nanmean(shared_r))
        result["residual_seed_to_seed"] = float(np.nanmean(residual_r))
    return result
