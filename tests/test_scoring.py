"""TRAK scores over a λ grid: eigendecomposition forms vs a naive inverse per λ, and score files."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from diffattr import files, scoring
from diffattr.errors import ConfigError, CorruptFileError, FeatureMismatchError
from diffattr.store import read_attrs, write_h5

LAMBDAS = [1e-2, 0.5, 10.0, 1e3]

FEATURE_ATTRS = {
    "proj_kind": "normal",
    "proj_seed": 0,
    "proj_dim": 64,
    "output_fn": "loss",
    "timesteps": [0, 100, 200],
    "noise_seed": 3,
    "noise": "common",
    "noise_batch_size": 0,
    "noise_shard_rows": 0,
    "model_digest": "abc123",
}


def naive_scores(phi: np.ndarray, psi: np.ndarray, lambdas: list[float]) -> np.ndarray:
    """Ψ (ΦᵀΦ + λI)⁻¹ Φᵀ with one explicit inverse per λ (independent reference)."""
    phi = phi.astype(np.float64)
    psi = psi.astype(np.float64)
    kernel = phi.T @ phi
    eye = np.eye(kernel.shape[0])
    return np.stack([psi @ np.linalg.inv(kernel + lam * eye) @ phi.T for lam in lambdas])


def assert_close(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape
    for got, want in zip(actual, expected, strict=True):
        scale = np.abs(want).max()
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * scale)


def features(n: int, dim: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


@pytest.mark.parametrize(("n_train", "dim"), [(40, 12), (10, 30)], ids=["Z<N", "Z>N"])
@pytest.mark.parametrize("form", ["auto", "primal", "dual"])
def test_trak_scores_match_naive_inverse(n_train: int, dim: int, form: str) -> None:
    phi, psi = features(n_train, dim, 0), features(7, dim, 1)
    scores = scoring.trak_scores(phi, psi, LAMBDAS, form=form)
    assert scores.dtype == np.float32
    assert_close(scores, naive_scores(phi, psi, LAMBDAS))


def test_choose_form_picks_the_smaller_kernel() -> None:
    assert scoring.choose_form(40, 12) == "primal"
    assert scoring.choose_form(10, 30) == "dual"
    with pytest.raises(ConfigError, match="'svd'"):
        scoring.choose_form(10, 30, "svd")


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_nonpositive_lambda_raises(bad: float) -> None:
    with pytest.raises(ConfigError, match=str(bad)):
        scoring.trak_scores(features(5, 3, 0), features(2, 3, 1), [1.0, bad])


def test_feature_dimension_mismatch_names_both_shapes() -> None:
    with pytest.raises(FeatureMismatchError, match=r"\(5, 3\).*\(2, 4\)"):
        scoring.trak_scores(features(5, 3, 0), features(2, 4, 1), [1.0])


def test_dot_and_cosine_scores() -> None:
    train, test = features(6, 4, 0), features(3, 4, 1)
    train[2] = 0.0
    np.testing.assert_allclose(scoring.dot_scores(test, train), test @ train.T, rtol=1e-5)
    cosine = scoring.cosine_scores(test, train)
    for j in range(3):
        for i in range(6):
            norm = np.linalg.norm(test[j]) * np.linalg.norm(train[i])
            want = 0.0 if norm == 0 else float(test[j] @ train[i]) / norm
            assert cosine[j, i] == pytest.approx(want, abs=1e-6)


# --------------------------------------------------------------------------- score files


def write_features(path, matrix: np.ndarray, split: str, id_offset: int = 0, **overrides) -> None:
    attrs = {**FEATURE_ATTRS, "split": split, **overrides}
    ids = np.arange(matrix.shape[0], dtype=np.int64) + id_offset
    write_h5(path, {"features": matrix, "ids": ids}, attrs)


@pytest.mark.parametrize(
    ("n_train", "dim", "chunk_rows", "form"),
    [(40, 12, 7, "primal"), (10, 30, 3, "dual"), (10, 30, 4, "primal")],
)
def test_write_trak_scores_matches_naive(tmp_path, n_train, dim, chunk_rows, form) -> None:
    phi, psi = features(n_train, dim, 0), features(9, dim, 1)
    write_features(tmp_path / "train.h5", phi, "train", id_offset=100)
    write_features(tmp_path / "test.h5", psi, "val", id_offset=7)
    out = scoring.write_trak_scores(
        tmp_path / "train.h5",
        tmp_path / "test.h5",
        tmp_path / "scores.h5",
        LAMBDAS,
        {"method": "trak", "K": 3},
        scoring.TrakOptions(chunk_rows=chunk_rows, form=form),
    )
    loaded = files.read_scores(out)
    assert loaded.scores.dtype == np.float32
    assert_close(loaded.scores, naive_scores(phi, psi, LAMBDAS))
    np.testing.assert_array_equal(loaded.lambdas, LAMBDAS)
    np.testing.assert_array_equal(loaded.train_ids, np.arange(n_train) + 100)
    np.testing.assert_array_equal(loaded.test_ids, np.arange(9) + 7)
    attrs = loaded.attrs
    assert attrs["score_kind"] == "trak" and attrs["form"] == form and attrs["method"] == "trak"
    assert attrs["timesteps"] == [0, 100, 200] and attrs["proj_seed"] == 0
    assert attrs["train_split"] == "train" and attrs["test_split"] == "val"
    assert attrs["train_features"]["path"] == str(tmp_path / "train.h5")
    assert attrs["test_features"]["model_digest"] == "abc123"
    one = files.read_scores(out, lambda_index=2)
    np.testing.assert_array_equal(one.scores, loaded.scores[2])


def test_write_trak_scores_rejects_mismatched_provenance(tmp_path) -> None:
    write_features(tmp_path / "train.h5", features(8, 4, 0), "train")
    write_features(tmp_path / "test.h5", features(3, 4, 1), "val", proj_seed=17)
    with pytest.raises(FeatureMismatchError, match=r"proj_seed: 0 vs 17"):
        scoring.write_trak_scores(
            tmp_path / "train.h5", tmp_path / "test.h5", tmp_path / "s.h5", [1.0], {}
        )
    assert not (tmp_path / "s.h5").exists()
    # The caller may narrow the keys that must agree.
    scoring.write_trak_scores(
        tmp_path / "train.h5",
        tmp_path / "test.h5",
        tmp_path / "s.h5",
        [1.0],
        {},
        scoring.TrakOptions(check_keys=["output_fn"]),
    )
    assert read_attrs(tmp_path / "s.h5")["score_kind"] == "trak"


def test_write_trak_scores_rejects_bad_lambda(tmp_path) -> None:
    write_features(tmp_path / "train.h5", features(8, 4, 0), "train")
    write_features(tmp_path / "test.h5", features(3, 4, 1), "val")
    with pytest.raises(ConfigError, match="-0.5"):
        scoring.write_trak_scores(
            tmp_path / "train.h5", tmp_path / "test.h5", tmp_path / "s.h5", [1.0, -0.5], {}
        )


def test_truncated_feature_file_raises(tmp_path) -> None:
    write_features(tmp_path / "train.h5", features(8, 4, 0), "train")
    write_features(tmp_path / "test.h5", features(3, 4, 1), "val")
    data = (tmp_path / "train.h5").read_bytes()
    (tmp_path / "train.h5").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptFileError, match="train.h5"):
        scoring.write_trak_scores(
            tmp_path / "train.h5", tmp_path / "test.h5", tmp_path / "s.h5", [1.0], {}
        )


def test_corrupt_score_file_raises(tmp_path) -> None:
    write_features(tmp_path / "train.h5", features(8, 4, 0), "train")
    write_features(tmp_path / "test.h5", features(3, 4, 1), "val")
    path = scoring.write_trak_scores(
        tmp_path / "train.h5", tmp_path / "test.h5", tmp_path / "s.h5", [1.0, 2.0], {}
    )
    data = path.read_bytes()
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(data[: len(data) // 3])
    with pytest.raises(CorruptFileError):
        files.read_scores(truncated)
    # A file written by something else (no `complete` mark) is refused too.
    with h5py.File(tmp_path / "foreign.h5", "w") as handle:
        handle["scores"] = np.zeros((1, 3, 8), dtype=np.float32)
    with pytest.raises(CorruptFileError, match="complete"):
        files.read_scores(tmp_path / "foreign.h5")
    # Inconsistent layout.
    write_h5(
        tmp_path / "bad.h5",
        {
            "scores": np.zeros((2, 3, 8), np.float32),
            "lambdas": np.ones(3),
            "train_ids": np.arange(8),
            "test_ids": np.arange(3),
        },
        {},
    )
    with pytest.raises(CorruptFileError, match="lambdas"):
        files.read_scores(tmp_path / "bad.h5")


def test_missing_provenance_attr_raises(tmp_path) -> None:
    write_h5(
        tmp_path / "train.h5",
        {"features": features(8, 4, 0), "ids": np.arange(8)},
        {"split": "train"},
    )
    write_features(tmp_path / "test.h5", features(3, 4, 1), "val")
    with pytest.raises(CorruptFileError, match="proj_kind"):
        scoring.write_trak_scores(
            tmp_path / "train.h5", tmp_path / "test.h5", tmp_path / "s.h5", [1.0], {}
        )


@pytest.mark.parametrize(
    ("name", "value", "valid"),
    [
        ("form", "square", "'primal'"),
        ("normalize", "unit", "'relative'"),
        ("score_kind", "", "method kind"),
        ("check_keys", "output_fn", "list"),
        ("check_keys", [1], "attribute names"),
        ("chunk_rows", 0, "integer >= 1"),
        ("chunk_rows", 4.0, "integer"),
    ],
)
def test_trak_options_refuse_a_bad_value_by_name(name, value, valid) -> None:
    with pytest.raises(ConfigError) as caught:
        scoring.TrakOptions(**{name: value})
    assert f"TrakOptions.{name} = {value!r}" in str(caught.value)
    assert valid in str(caught.value)
    assert scoring.TrakOptions(check_keys=["K"]).check_keys == ("K",)  # stored as a tuple
