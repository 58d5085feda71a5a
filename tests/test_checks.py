"""Sample quality, proponent class agreement and the plain-words findings, against slow loops."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from diffattr.attribution_sanity import class_agreement, plot_sanity
from diffattr.demo_checks import findings, wilson_interval
from diffattr.errors import ConfigError, FeatureMismatchError
from diffattr.sample_quality import nearest_distances, quality_record, sample_sheet


def _digits():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    order = np.random.default_rng(42).permutation(len(bunch.target))  # writers mixed, as a split
    images = (bunch.images / 8.0 - 1.0).astype(np.float32)[:, None]
    return images[order], bunch.target[order]


def test_nearest_distances_match_a_loop():
    rng = np.random.default_rng(0)
    queries = rng.uniform(-1, 1, (7, 1, 4, 4))
    train = rng.uniform(-1, 1, (11, 1, 4, 4))
    distance, nearest = nearest_distances(queries, train)
    for i, q in enumerate(queries):
        rms = [np.sqrt(np.mean(((q - t) / 2) ** 2)) for t in train]
        assert nearest[i] == int(np.argmin(rms))
        assert distance[i] == pytest.approx(min(rms), abs=1e-9)
    copy, row = nearest_distances(train[3:4], train)
    assert copy[0] == pytest.approx(0.0, abs=1e-6) and row[0] == 3


def test_real_digits_are_recognised_and_noise_is_not():
    images, labels = _digits()
    train, val = slice(0, 600), slice(600, 800)
    noise = np.random.default_rng(1).uniform(-1, 1, (100, 1, 8, 8)).astype(np.float32)
    record = quality_record(images[train], labels[train], images[val], labels[val], noise)
    assert record["val"]["accuracy"] > 0.85
    assert record["val"]["recognised_fraction"] > 0.7
    assert record["gen"]["recognised_fraction"] < 0.15
    assert record["gen"]["median_nearest_distance"] > record["val"]["median_nearest_distance"]
    copies = quality_record(
        images[train], labels[train], images[val], labels[val], images[train][:50]
    )
    assert copies["gen"]["median_nearest_distance"] == 0.0
    assert copies["gen"]["recognised_fraction"] > 0.8


def test_class_agreement_matches_a_loop():
    rng = np.random.default_rng(2)
    train_labels = rng.integers(0, 4, 40)
    query_labels = rng.integers(0, 4, 9)
    support = rng.normal(size=(9, 40))
    result = class_agreement(support, query_labels, train_labels, top=5)
    shares, chances = [], []
    for row, label in zip(support, query_labels, strict=True):
        best = sorted(range(40), key=lambda j: -row[j])[:5]
        shares.append(sum(train_labels[j] == label for j in best) / 5)
        chances.append(np.mean(train_labels == label))
    assert result["agreement"] == pytest.approx(np.mean(shares))
    assert result["chance"] == pytest.approx(np.mean(chances))
    assert result["per_query"] == pytest.approx(shares, abs=1e-4)
    perfect = np.where(train_labels[None, :] == query_labels[:, None], 1.0, 0.0)
    assert class_agreement(perfect, query_labels, train_labels, 3)["agreement"] == 1.0


def test_class_agreement_rejects_mismatched_shapes():
    with pytest.raises(FeatureMismatchError, match="expected \\[3 queries, 5 training rows\\]"):
        class_agreement(np.zeros((3, 4)), np.zeros(3), np.zeros(5), 2)
    with pytest.raises(ConfigError, match="top = 6"):
        class_agreement(np.zeros((3, 5)), np.zeros(3), np.zeros(5), 6)


def test_wilson_interval_known_values():
    low, high = wilson_interval(0.5, 10)
    assert (round(low, 4), round(high, 4)) == (0.2366, 0.7634)
    low, high = wilson_interval(1.0, 10)
    assert round(low, 4) == 0.7225 and high == 1.0


def test_sample_sheet_has_gaps_and_the_real_panel():
    images = np.ones((4, 1, 8, 8), dtype=np.float32)  # white digits: gaps are white too
    dark = -images
    sheet = sample_sheet(dark, dark, columns=2, cell=10, gap=3)
    assert sheet.ndim == 3 and sheet.shape[2] == 3
    one_panel = sample_sheet(dark, None, columns=2, cell=10, gap=3)
    assert sheet.shape[1] > 2 * one_panel.shape[1]
    body = one_panel[26:]
    assert (body[:3] == 255).all(), "a white gap above the first row"
    assert (body[3:13, 3:13] == 0).all(), "the first (black) image, 10 px wide"
    assert (body[3:13, 13:16] == 255).all(), "a gap between columns"


def test_findings_say_what_won_and_whether_the_counterfactual_decides(tmp_path):
    summary = tmp_path / "summary.csv"
    rows = [
        {"method": "dtrak", "split": "val", "K": 10, "lambda_choice": "heldout", "lds": 20.0},
        {"method": "raw_cos", "split": "val", "K": 0, "lambda_choice": "heldout", "lds": 30.0},
    ]
    with open(summary, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    sanity = [{"method": "dtrak", "split": "val", "top": 5, "agreement": 0.6, "chance": 0.1,
               "ratio": 6.0}]  # fmt: skip
    counterfactual = {
        "top_k": 120,
        "paired": [
            {"metric": "l2", "method": "dtrak", "other": "random", "fraction_more_change": 1.0,
             "n_targets": 12},
            {"metric": "l2", "method": "trak", "other": "random", "fraction_more_change": 0.5,
             "n_targets": 4},
        ],
    }  # fmt: skip
    lines = findings(
        str(summary), None, sanity, counterfactual, {"dtrak": "trak", "raw_cos": "raw_cos"}, {}
    )
    text = " ".join(t for _, t in lines)
    assert "is raw_cos (LDS 30.0 %)" in text and "dtrak, reaches 20.0 %" in text
    assert "dtrak 60 % (6.0×)" in text
    assert "12 targets (95 % interval 76–100 %): more than random removal" in text
    assert "4 targets (95 % interval 15–85 %): not distinguishable" in text


def test_sanity_figure_renders(tmp_path):
    rows = [
        {
            "method": m,
            "K": 10,
            "split": s,
            "top": 5,
            "agreement": a,
            "chance": 0.1,
            "ratio": a / 0.1,
        }
        for m, a in (("dtrak", 0.5), ("raw_cos", 0.9))
        for s in ("val", "gen")
    ]
    plot_sanity(rows, tmp_path / "f.png")
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_check_attributions_reads_the_selected_lambda_score_file(tmp_path):
    """The score file of a ridge method holds only its held-out λ (select_scores); the job must
    find it by value, not by its index in the LDS grid, and agree with a direct count."""
    import h5py

    from diffattr import store
    from diffattr.jobs.checks import RecordAndFigure, check_attributions
    from diffattr.settings import AgreementSettings

    rng = np.random.default_rng(0)
    n_train, n_val = 30, 8
    train_labels = rng.integers(0, 3, n_train)
    val_labels = rng.integers(0, 3, n_val)
    with h5py.File(tmp_path / "dataset.h5", "w") as handle:
        for split, labels in (("train", train_labels), ("val", val_labels)):
            group = handle.create_group(split)
            group["images"] = np.zeros((len(labels), 1, 2, 2), np.float32)
            group["labels"] = labels
            group["ids"] = np.arange(len(labels)) + (0 if split == "train" else 100)
        handle.attrs[store.COMPLETE_ATTR] = True
    tau = rng.normal(size=(n_val, n_train)).astype(np.float32)
    with h5py.File(tmp_path / "scores.h5", "w") as handle:
        handle["scores"] = tau[None]
        handle["lambdas"] = np.array([2000.0])
        handle["train_ids"] = np.arange(n_train)
        handle["test_ids"] = np.arange(n_val) + 100
        handle.attrs["lds_sign"] = -1
        handle.attrs[store.COMPLETE_ATTR] = True
    store.write_json(
        tmp_path / "lds.json", {"choices": {"heldout": {"lambda": 2000.0, "lambda_index": 16}}}
    )
    rows = check_attributions(
        [str(tmp_path / "scores.h5")],
        [str(tmp_path / "lds.json")],
        str(tmp_path / "dataset.h5"),
        None,
        out=RecordAndFigure(
            record=str(tmp_path / "agreement.json"), figure=str(tmp_path / "agreement.png")
        ),
        settings=AgreementSettings(labels=[{"method": "trak", "K": 10, "split": "val"}], top=5),
    )
    top5 = np.argsort(-tau, axis=1, kind="stable")[:, :5]
    expected = np.mean([(train_labels[r] == val_labels[q]).mean() for q, r in enumerate(top5)])
    assert rows[0]["agreement"] == pytest.approx(expected)
    assert rows[0]["lambda"] == 2000.0
