"""The λ grid from one factorisation (diffattr.spectral) against a direct solve per λ (float64):
subset predictions, LDS curves, the selected score files and the jobs that read them."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from diffattr import files, lds, spectral, store
from diffattr.errors import ConfigError, FeatureMismatchError
from diffattr.files import read_scores
from diffattr.jobs.counterfactual import choose_counterfactual_lambda, remove_top_examples
from diffattr.jobs.lds import HeldoutChoice, evaluate_lds
from diffattr.jobs.scores import score_grid, select_scores
from diffattr.scoring import TrakOptions, write_trak_scores
from diffattr.settings import (
    CounterfactualLambdaSettings,
    LdsSettings,
    RemovalSettings,
    ScoreGridSettings,
)

LAMBDAS = [1e-3, 0.05, 1.0, 30.0, 1e4]
N_TEST, N_SUBSETS = 7, 16
ATTRS = {
    "proj_kind": "normal",
    "proj_seed": 1,
    "proj_dim": 0,
    "output_fn": "loss",
    "timesteps": [0, 500],
    "noise_seed": 0,
    "noise": "common",
    "noise_batch_size": 0,
    "noise_shard_rows": 0,
    "model_digest": "main",
}


def features(rows: int, dim: int, seed: int) -> np.ndarray:
    """Float32-representable features (as stored), with a decaying spectrum."""
    rng = np.random.default_rng(seed)
    matrix = rng.standard_normal((rows, dim)) * np.geomspace(3, 0.05, dim)
    return matrix.astype(np.float32).astype(np.float64)


def write_features(path, matrix, split) -> str:
    ids = np.arange(len(matrix), dtype=np.int64) + (0 if split == "train" else 1000)
    attrs = {**ATTRS, "proj_dim": matrix.shape[1], "split": split}
    store.write_h5(path, {"features": matrix.astype(np.float32), "ids": ids}, attrs)
    return str(path)


def direct_scores(phi, psi, lam, normalize="none") -> np.ndarray:
    """τ_λ = Ψ G⁻¹ Φᵀ by one float64 solve, columns normalised as in protocol §5."""
    gram = phi.T @ phi + lam * np.eye(phi.shape[1])
    solved = np.linalg.solve(gram, phi.T)  # G⁻¹ Φᵀ [Z, N]
    tau = psi @ solved
    if normalize == "relative":
        tau = tau / np.linalg.norm(solved.T, axis=1)  # ‖(Φ G⁻¹)_i‖
    elif normalize == "renormalized":
        tau = tau / np.linalg.norm(phi, axis=1)
    return tau


def direct_curves(taus, masks, measured, sign=-1) -> np.ndarray:
    """Per-query LDS [L, n] from the full score matrices, one λ at a time."""
    return np.stack([lds.lds_per_sample(tau, masks, measured, sign) for tau in taus])


def truth(n_train: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    masks = rng.random((N_SUBSETS, n_train)) < 0.5
    measured = masks @ rng.standard_normal((n_train, N_TEST)) + rng.standard_normal(
        (N_SUBSETS, N_TEST)
    )
    return masks, measured


@pytest.mark.parametrize(("n_train", "dim", "form"), [(40, 12, "primal"), (10, 25, "dual")])
@pytest.mark.parametrize("normalize", ["none", "relative", "renormalized"])
def test_grid_predictions_and_lds_equal_the_direct_solve(
    tmp_path, monkeypatch, n_train, dim, form, normalize
):
    monkeypatch.setattr(spectral, "ROW_BLOCK", 7)  # several blocks of training rows
    phi, psi = features(n_train, dim, 1), features(N_TEST, dim, 2)
    train = write_features(tmp_path / "train.h5", phi, "train")
    test = write_features(tmp_path / "val.h5", psi, "val")
    out = tmp_path / "spectra.h5"
    options = TrakOptions(chunk_rows=6, form="auto", normalize=normalize)
    spectral.write_spectra(train, test, out, {"lds_sign": -1}, options)
    assert store.read_attrs(out)["form"] == form
    masks, measured = truth(n_train, 3)
    taus = [direct_scores(phi, psi, lam, normalize) for lam in LAMBDAS]
    with spectral.open_scores(out, LAMBDAS, [train]) as grid:
        predictions = grid.predictions(masks)
    expected = np.stack([-(masks @ tau.T) for tau in taus])
    scale = np.abs(expected).max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(predictions / scale, expected / scale, rtol=0, atol=1e-6)
    ours = lds.lds_from_predictions(predictions, measured)
    np.testing.assert_allclose(ours, direct_curves(taus, masks, measured), rtol=0, atol=1e-6)


@pytest.mark.parametrize(("n_train", "dim"), [(20, 8), (6, 8)])
def test_ensemble_members_are_averaged(tmp_path, n_train, dim):
    members, expected, trains = [], [], []
    for seed in range(3):
        phi, psi = features(n_train, dim, 10 + seed), features(N_TEST, dim, 20 + seed)
        trains.append(write_features(tmp_path / f"train{seed}.h5", phi, "train"))
        members.append(
            spectral.member_from_features(phi, psi, train_attrs=store.read_attrs(trains[-1]))
        )
        expected.append([direct_scores(phi, psi, lam) for lam in LAMBDAS])
    expected = np.mean(expected, axis=0)
    out = tmp_path / "ensemble.h5"
    spectral.write_spectra_members(
        out, members, np.arange(n_train), np.arange(N_TEST), {"lds_sign": -1}
    )
    masks, measured = truth(n_train, 4)
    with spectral.open_scores(out, LAMBDAS, trains) as grid:
        curves = lds.lds_from_predictions(grid.predictions(masks), measured)
        spectral.write_selected_scores(grid, tmp_path / "scores.h5", [0, 3])
    np.testing.assert_allclose(curves, direct_curves(expected, masks, measured), atol=1e-6)
    stored = read_scores(tmp_path / "scores.h5")
    assert stored.lambdas.tolist() == [LAMBDAS[0], LAMBDAS[3]]
    for position, index in enumerate([0, 3]):
        scale = np.abs(expected[index]).max()
        np.testing.assert_allclose(stored.scores[position], expected[index], atol=2e-6 * scale)
    if n_train > dim:  # primal: the training features are read again, and checked
        with pytest.raises(FeatureMismatchError, match="not the training feature file"):
            with spectral.open_scores(out, LAMBDAS, trains[::-1]) as grid:
                grid.predictions(masks)
        with pytest.raises(ConfigError, match="needs the training features"):
            spectral.open_scores(out, LAMBDAS)


def test_a_spectra_file_needs_the_grid(tmp_path):
    phi, psi = features(4, 5, 1), features(N_TEST, 5, 2)
    member = spectral.member_from_features(phi, psi)
    out = tmp_path / "s.h5"
    spectral.write_spectra_members(out, [member], np.arange(4), np.arange(N_TEST), {"lds_sign": -1})
    with pytest.raises(ConfigError, match="needs the λ grid"):
        spectral.open_scores(out)
    with pytest.raises(ConfigError, match=r"not at λ = 7.0.*write_all_lambdas"):
        files.lambda_position([1.0, 30.0], 7.0, "scores.h5")


def _pools(tmp_path, n_train, split, ids):
    """Benchmark and held-out ground truth files with outputs linear in the masks."""
    paths = {}
    for pool, seed in (("lds", 5), ("heldout", 6)):
        masks, measured = truth(n_train, seed)
        paths[pool] = str(tmp_path / f"{pool}.h5")
        store.write_h5(
            paths[pool],
            {
                "masks": masks,
                "train_ids": np.arange(n_train),
                f"{split}/measured": measured,
                f"{split}/measured_by_seed": measured[None],
                f"{split}/ids": ids,
            },
            {"pool": pool},
        )
    return paths


def test_jobs_on_the_spectra_match_the_full_score_grid(tmp_path, monkeypatch):
    """evaluate_lds, the counterfactual λ and the removal from the spectra file and the selected
    score file give what the full grid of score matrices gives."""
    monkeypatch.setattr(spectral, "ROW_BLOCK", 8)
    n_train, dim = 30, 9
    phi, psi = features(n_train, dim, 7), features(N_TEST, dim, 8)
    train = write_features(tmp_path / "train.h5", phi, "train")
    test = write_features(tmp_path / "gen-features.h5", psi, "gen")
    attrs = {"method": "trak", "kind": "trak", "K": 2, "lds_sign": -1}
    spectra, full = str(tmp_path / "spectra.h5"), str(tmp_path / "full.h5")
    spectral.write_spectra(train, test, spectra, attrs, TrakOptions(chunk_rows=8))
    write_trak_scores(train, test, full, LAMBDAS, attrs, TrakOptions(chunk_rows=8))
    pools = _pools(tmp_path, n_train, "gen", np.arange(N_TEST) + 1000)
    grid = LdsSettings(split="gen", bootstrap_resamples=8, bootstrap_seed=0, lambdas=LAMBDAS)
    ours = evaluate_lds(spectra, pools["lds"], pools["heldout"], str(tmp_path / "a.json"),
                        settings=grid, train_paths=[train])  # fmt: skip
    reference = evaluate_lds(
        full, pools["lds"], pools["heldout"], str(tmp_path / "b.json"),
        settings=replace(grid, lambdas=None),
    )  # fmt: skip
    np.testing.assert_allclose(ours["lds_curve"], reference["lds_curve"], atol=1e-6)
    np.testing.assert_allclose(ours["heldout_curve"], reference["heldout_curve"], atol=1e-6)
    for name in ("heldout", "oracle"):
        assert ours["choices"][name]["lambda_index"] == reference["choices"][name]["lambda_index"]
        assert ours["choices"][name]["boot_std"] == pytest.approx(
            reference["choices"][name]["boot_std"], abs=1e-6
        )
    choice = choose_counterfactual_lambda(
        spectra, pools["heldout"], str(tmp_path / "c.json"), [train],
        settings=CounterfactualLambdaSettings(method="trak", K=2, lambdas=LAMBDAS),
    )  # fmt: skip
    assert choice["lambda_index"] == ours["choices"]["heldout"]["lambda_index"]
    selected = str(tmp_path / "gen.h5")
    at_lambdas = ScoreGridSettings(lambdas=LAMBDAS, chunk_rows=8)
    chosen = select_scores(
        spectra, pools["heldout"], selected, split="gen", grid=at_lambdas, train_paths=[train]
    )
    assert chosen == choice["lambda"]
    stored = read_scores(selected)
    assert stored.lambdas.tolist() == [choice["lambda"]]
    assert stored.attrs["heldout_lambda"] == choice["lambda"]
    assert stored.attrs["lambda_grid"] == LAMBDAS
    train_split = {
        "train/ids": np.arange(n_train),
        "train/labels": np.zeros(n_train, dtype=np.int64),
        "train/images": np.zeros((n_train, 1, 2, 2), dtype=np.float32),
    }
    store.write_h5(tmp_path / "dataset.h5", train_split, {})
    for scores_path, name in ((selected, "ours.h5"), (full, "reference.h5")):
        remove_top_examples(
            str(tmp_path / "dataset.h5"), str(tmp_path / name),
            settings=RemovalSettings(method="trak", target=1003, top_k=5, random_seed=0),
            scores_path=scores_path, lambda_path=str(tmp_path / "c.json"),
        )  # fmt: skip
    np.testing.assert_array_equal(
        store.read_h5(tmp_path / "ours.h5", "removed"),
        store.read_h5(tmp_path / "reference.h5", "removed"),
    )
    everything = str(tmp_path / "grid.h5")
    score_grid(spectra, everything, grid=at_lambdas, train_paths=[train])
    grid, reference_grid = read_scores(everything), read_scores(full)
    assert grid.lambdas.tolist() == LAMBDAS
    scale = np.abs(reference_grid.scores).max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(grid.scores / scale, reference_grid.scores / scale, atol=1e-6)


def _two_split_pools(tmp_path, n_train, seeds):
    """Benchmark and held-out ground truth with a val and a gen split: outputs linear in the
    masks plus noise, a different linear map and noise per split."""
    paths = {}
    for pool, seed in (("lds", seeds[0]), ("heldout", seeds[1])):
        rng = np.random.default_rng(seed)
        masks = rng.random((N_SUBSETS, n_train)) < 0.5
        arrays = {"masks": masks, "train_ids": np.arange(n_train)}
        for split in ("val", "gen"):
            noise = rng.standard_normal((N_SUBSETS, N_TEST))
            measured = masks @ rng.standard_normal((n_train, N_TEST)) + noise
            arrays[f"{split}/measured"] = measured
            arrays[f"{split}/measured_by_seed"] = measured[None]
            arrays[f"{split}/ids"] = np.arange(N_TEST) + 1000
        paths[pool] = str(tmp_path / f"{pool}.h5")
        store.write_h5(paths[pool], arrays, {"pool": pool})
    return paths


def test_the_gen_split_can_report_the_val_held_out_lambda(tmp_path):
    """lds.gen_lambda: val — evaluate_lds, the counterfactual λ and select_scores on gen all take
    the val split's held-out choice; the gen split's own choice stays in the record."""
    n_train, dim = 30, 9
    phi = features(n_train, dim, 7)
    train = write_features(tmp_path / "train.h5", phi, "train")
    attrs = {"method": "trak", "kind": "trak", "K": 2, "lds_sign": -1}
    spectra = {}
    for split, seed in (("val", 8), ("gen", 9)):
        test = write_features(tmp_path / f"{split}-features.h5", features(N_TEST, dim, seed), split)
        spectra[split] = str(tmp_path / f"{split}-spectra.h5")
        spectral.write_spectra(train, test, spectra[split], attrs, TrakOptions(chunk_rows=8))
    # held-out seeds for which the val and the gen held-out curves choose different λ
    pools = _two_split_pools(tmp_path, n_train, (5, 6))
    settings = LdsSettings(split="val", bootstrap_resamples=8, bootstrap_seed=0, lambdas=LAMBDAS)
    val = evaluate_lds(spectra["val"], pools["lds"], pools["heldout"], str(tmp_path / "v.json"),
                       settings=settings, train_paths=[train])  # fmt: skip
    gen_settings = replace(settings, split="gen")
    own = evaluate_lds(spectra["gen"], pools["lds"], pools["heldout"], str(tmp_path / "g.json"),
                       settings=gen_settings, train_paths=[train])  # fmt: skip
    by_val = HeldoutChoice(pools["heldout"], spectra["val"], (train,))
    chosen = evaluate_lds(spectra["gen"], pools["lds"], by_val, str(tmp_path / "gv.json"),
                          settings=gen_settings, train_paths=[train])  # fmt: skip
    val_index = val["choices"]["heldout"]["lambda_index"]
    own_index = own["choices"]["heldout"]["lambda_index"]
    assert val_index != own_index  # otherwise the test could not tell the rules apart
    assert (own["heldout_rule"], chosen["heldout_rule"]) == ("own", "val")
    assert chosen["choices"]["heldout"]["lambda_index"] == val_index
    assert chosen["choices"]["heldout"]["lds"] == pytest.approx(chosen["lds_curve"][val_index])
    assert chosen["heldout_own"]["lambda_index"] == own_index
    assert chosen["heldout_own"]["lds"] == pytest.approx(own["choices"]["heldout"]["lds"])
    assert chosen["choices"]["oracle"] == own["choices"]["oracle"]
    choice = choose_counterfactual_lambda(
        spectra["gen"], by_val, str(tmp_path / "c.json"), [train],
        settings=CounterfactualLambdaSettings(method="trak", K=2, lambdas=LAMBDAS),
    )  # fmt: skip
    assert choice["lambda_index"] == val_index
    selected = select_scores(
        spectra["gen"], by_val, str(tmp_path / "gen.h5"), split="gen",
        grid=ScoreGridSettings(lambdas=LAMBDAS, chunk_rows=8), train_paths=[train],
    )  # fmt: skip
    assert selected == LAMBDAS[val_index]
    # a chooser on another grid is refused
    other = str(tmp_path / "val-other.h5")
    write_trak_scores(train, tmp_path / "val-features.h5", other, LAMBDAS[:3], attrs,
                      TrakOptions(chunk_rows=8))  # fmt: skip
    with pytest.raises(FeatureMismatchError, match="differs from the gen grid"):
        evaluate_lds(spectra["gen"], pools["lds"], HeldoutChoice(pools["heldout"], other),
                     str(tmp_path / "x.json"), settings=gen_settings, train_paths=[train])  # fmt: skip
