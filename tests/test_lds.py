"""LDS: Spearman per column, grid evaluation, bootstrap, noise ceiling and the choice of λ."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from diffattr import lds
from diffattr.errors import ConfigError, FeatureMismatchError


def synthetic(n_subsets=32, n_train=60, n_test=8, noise=0.05, seed=0):
    """Masks, scores and measured outputs that follow the linear datamodel exactly (+ noise)."""
    rng = np.random.default_rng(seed)
    masks = rng.random((n_subsets, n_train)) < 0.5
    scores = rng.standard_normal((n_test, n_train))
    clean = masks @ (-scores).T
    measured = clean + noise * clean.std() * rng.standard_normal(clean.shape)
    return scores, masks, measured


def test_spearman_columns_matches_scipy_loop_with_ties() -> None:
    rng = np.random.default_rng(1)
    a = rng.integers(0, 4, size=(20, 6)).astype(float)  # many ties
    b = rng.standard_normal((20, 6))
    b[:, 2] = np.round(b[:, 2])  # ties in b as well
    got = lds.spearman_columns(a, b)
    want = [spearmanr(a[:, j], b[:, j]).statistic for j in range(6)]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_spearman_constant_column_is_nan() -> None:
    a = np.arange(10.0)[:, None].repeat(3, axis=1)
    b = np.random.default_rng(0).standard_normal((10, 3))
    a[:, 1] = 4.0
    got = lds.spearman_columns(a, b)
    assert np.isnan(got[1]) and np.isfinite(got[[0, 2]]).all()
    with pytest.raises(FeatureMismatchError, match=r"\(10, 3\).*\(10, 2\)"):
        lds.spearman_columns(a, b[:, :2])


def test_lds_matches_direct_definition_and_sign() -> None:
    scores, masks, measured = synthetic(noise=1.0)
    pred = masks.astype(float) @ (-scores).T
    want = np.mean([spearmanr(pred[:, j], measured[:, j]).statistic for j in range(8)])
    assert lds.lds(scores, masks, measured) == pytest.approx(want, abs=1e-12)
    # Scores in loss units use sign +1: -scores with sign +1 is the same prediction.
    assert lds.lds(-scores, masks, measured, sign=1) == pytest.approx(want, abs=1e-12)
    with pytest.raises(ConfigError, match="sign"):
        lds.lds(scores, masks, measured, sign=0)


def test_lds_near_one_for_linear_synthetic_case() -> None:
    scores, masks, measured = synthetic(noise=0.01)
    assert lds.lds(scores, masks, measured) > 0.99
    assert lds.lds(scores, masks, measured, sign=1) < -0.99


def test_lds_counts_nan_queries() -> None:
    scores, masks, measured = synthetic()
    measured[:, 3] = 1.0
    summary = lds.lds_summary(scores, masks, measured)
    assert summary["n_nan"] == 1 and summary["n_samples"] == 8
    assert summary["lds"] == pytest.approx(np.nanmean(summary["per_sample"]))
    with pytest.warns(RuntimeWarning, match="1 of 8"):
        lds.lds(scores, masks, measured)


def test_shape_mismatches_name_both_shapes() -> None:
    scores, masks, measured = synthetic()
    with pytest.raises(FeatureMismatchError, match=r"\(32, 59\).*\(8, 60\)"):
        lds.lds_per_sample(scores, masks[:, :59], measured)
    with pytest.raises(FeatureMismatchError, match=r"\(31, 8\).*\(32, 60\)"):
        lds.lds_per_sample(scores, masks, measured[:31])
    with pytest.raises(FeatureMismatchError, match=r"\(32, 8\).*\(7, 60\)"):
        lds.lds_per_sample(scores[:7], masks, measured)


def test_lds_for_grid_equals_per_lambda_lds() -> None:
    rng = np.random.default_rng(3)
    scores, masks, measured = synthetic(noise=2.0)
    grid = np.stack([scores, scores + rng.standard_normal(scores.shape), -scores])
    got = lds.lds_for_grid(grid, masks, measured)
    want = [lds.lds(grid[index], masks, measured) for index in range(3)]
    np.testing.assert_allclose(got, want, atol=1e-12)
    per_sample = lds.lds_grid_per_sample(grid, masks, measured)
    np.testing.assert_allclose(per_sample[1], lds.lds_per_sample(grid[1], masks, measured))


def test_bootstrap_is_deterministic_and_centred() -> None:
    scores, masks, measured = synthetic(n_subsets=64, noise=0.5)
    first = lds.bootstrap_lds(scores, masks, measured, n_resamples=32, seed=7)
    second = lds.bootstrap_lds(scores, masks, measured, n_resamples=32, seed=7)
    np.testing.assert_array_equal(first["samples"], second["samples"])
    other = lds.bootstrap_lds(scores, masks, measured, n_resamples=32, seed=8)
    assert not np.array_equal(first["samples"], other["samples"])
    point = lds.lds(scores, masks, measured)
    assert first["point"] == pytest.approx(point)
    assert abs(first["mean"] - point) < 0.05
    assert first["ci_low"] <= first["mean"] <= first["ci_high"]
    assert first["std"] == pytest.approx(np.std(first["samples"]))
    assert first["samples"].shape == (32,) and first["method"] == "percentile"


def test_noise_ceiling_equals_direct_loop() -> None:
    rng = np.random.default_rng(5)
    base = rng.standard_normal((16, 4))
    by_seed = base[None] + 0.5 * rng.standard_normal((3, 16, 4))
    result = lds.noise_ceiling(by_seed)
    want = []
    for a in range(3):
        for b in range(a + 1, 3):
            rho = [spearmanr(by_seed[a][:, j], by_seed[b][:, j]).statistic for j in range(4)]
            want.append(np.mean(rho))
    np.testing.assert_allclose(result["per_pair"], want, atol=1e-12)
    assert result["pairs"] == [(0, 1), (0, 2), (1, 2)]
    assert result["mean"] == pytest.approx(np.mean(want))
    with pytest.raises(ConfigError, match="at least two"):
        lds.noise_ceiling(by_seed[:1])


def test_attainable_lds_matches_the_true_signal_against_the_seed_mean() -> None:
    """With y_s = f + noise, the best predictor f reaches about the `attainable` LDS."""
    rng = np.random.default_rng(11)
    signal = rng.standard_normal((400, 8))
    by_seed = signal[None] + 1.5 * rng.standard_normal((2, 400, 8))
    result = lds.noise_ceiling(by_seed)
    truth = by_seed.mean(axis=0)
    best = np.mean([spearmanr(signal[:, j], truth[:, j]).statistic for j in range(8)])
    assert result["seeds"] == 2
    assert result["attainable"] == pytest.approx(best, abs=0.05)
    assert result["attainable"] > result["mean"]  # the mean of two seeds is less noisy


def test_choose_lambda_argmax_ties_to_smallest() -> None:
    lambdas = [10.0, 0.1, 1.0, 100.0]
    assert lds.choose_lambda([0.1, 0.3, 0.2, 0.0], lambdas) == (1, 0.1)
    assert lds.choose_lambda([0.3, 0.1, 0.3, np.nan], lambdas) == (2, 1.0)
    with pytest.raises(FeatureMismatchError, match=r"\(3,\).*\(4,\)"):
        lds.choose_lambda([0.1, 0.2, 0.3], lambdas)


def _scipy_lds(scores, masks, measured):
    pred = masks.astype(float) @ (-scores).T
    return np.mean([spearmanr(pred[:, j], measured[:, j]).statistic for j in range(pred.shape[1])])


def test_crossfit_chooses_on_one_half_and_evaluates_on_the_other() -> None:
    """Against a direct loop: fold f's λ maximises the other fold's LDS; its value is fold f's."""
    rng = np.random.default_rng(3)
    scores, masks, measured = synthetic(n_subsets=12, noise=1.0)
    lambdas = np.array([0.1, 1.0, 10.0, 100.0])
    grid = np.stack([scores + rng.standard_normal(scores.shape) * lam for lam in lambdas / 10])
    folds = lds.crossfit_folds(12)
    assert [f.tolist() for f in folds] == [list(range(0, 12, 2)), list(range(1, 12, 2))]
    full, *fold_curves = lds.lds_grid_per_sample_rows(
        grid, masks, measured, [np.arange(12), *folds]
    )
    np.testing.assert_allclose(full, lds.lds_grid_per_sample(grid, masks, measured))
    direct = [[_scipy_lds(g, masks[f], measured[f]) for g in grid] for f in folds]
    np.testing.assert_allclose([lds.curve_mean(c) for c in fold_curves], direct, atol=1e-12)
    result = lds.crossfit_choice(fold_curves, lambdas)
    for fold, other in ((0, 1), (1, 0)):
        best = int(np.argmax(direct[other]))
        assert result["lambda_indices"][fold] == best
        assert result["per_fold"][fold] == pytest.approx(direct[fold][best])
    assert result["lds"] == pytest.approx(np.mean(result["per_fold"]))
    assert result["at_grid_edge"] == any(i in (0, 3) for i in result["lambda_indices"])


def test_crossfit_needs_enough_subsets() -> None:
    with pytest.raises(Exception, match="at least 4 benchmark subsets"):
        lds.crossfit_folds(3)
    with pytest.raises(ConfigError, match="folds >= 2"):
        lds.crossfit_folds(10, folds=1)
    assert lds.at_grid_edge(0, 5) and lds.at_grid_edge(4, 5) and not lds.at_grid_edge(2, 5)


def test_paired_bootstrap_matches_a_direct_loop() -> None:
    """Same resampled subsets and queries for both methods, recomputed with scipy."""
    scores, masks, measured = synthetic(n_subsets=10, noise=2.0)
    other = scores + np.random.default_rng(5).standard_normal(scores.shape)
    pa, pb = lds.predictions(scores, masks), lds.predictions(other, masks)
    got = lds.paired_bootstrap(pa, pb, measured, n_resamples=20, seed=7)

    def direct(rows, cols):
        y = measured[np.ix_(rows, cols)]
        a, b = pa[np.ix_(rows, cols)], pb[np.ix_(rows, cols)]
        ra = [spearmanr(a[:, j], y[:, j]).statistic for j in range(len(cols))]
        rb = [spearmanr(b[:, j], y[:, j]).statistic for j in range(len(cols))]
        return np.nanmean(ra) - np.nanmean(rb)

    assert got["point"] == pytest.approx(direct(np.arange(10), np.arange(8)))
    rng = np.random.default_rng(7)
    want = [direct(rng.integers(0, 10, 10), rng.integers(0, 8, 8)) for _ in range(20)]
    assert got["mean"] == pytest.approx(np.mean(want)) and got["std"] == pytest.approx(np.std(want))
    same = lds.paired_bootstrap(pa, pa, measured, n_resamples=5)
    assert same["point"] == same["mean"] == same["std"] == 0.0


def test_ceiling_decomposition_finds_a_shared_model_effect() -> None:
    """Outputs = a per-subset effect shared by every query + per-query noise: the shared part
    explains its share of the variance and is reproducible across seeds; the rest is not."""
    rng = np.random.default_rng(0)
    effect = rng.standard_normal(40)
    seeds = np.stack([effect[:, None] + 0.5 * rng.standard_normal((40, 30)) for _ in range(2)])
    part = lds.ceiling_decomposition(seeds)
    z = (seeds.mean(0) - seeds.mean(0).mean(0)) / seeds.mean(0).std(0)
    assert part["shared_fraction"] == pytest.approx(np.mean(z.mean(1) ** 2))
    assert part["shared_fraction"] > 0.7 and part["shared_by_query"] > 0.8
    assert part["shared_seed_to_seed"] > 0.9 and abs(part["residual_seed_to_seed"]) < 0.1
    independent = lds.ceiling_decomposition(rng.standard_normal((1, 40, 30)))
    assert independent["shared_fraction"] < 0.1 and "shared_seed_to_seed" not in independent
