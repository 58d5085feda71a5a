"""summary.csv / summary.md / paired.csv from LDS records: cross-fitted rows, paired bootstrap of
method pairs, and the decomposition of the noise ceiling."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from diffattr import files, lds, store
from diffattr.jobs.summary import SummaryFiles, summarize
from diffattr.settings import SummarySettings
from diffattr.summary import paired_rows, summary_rows


def _record(method, K, split, prediction, lds_value):
    choice = {
        "lambda": 1.0,
        "lambda_index": 0,
        "lds": lds_value,
        "boot_mean": lds_value,
        "boot_std": 0.01,
        "ci_low": 0.0,
        "ci_high": 1.0,
        "at_grid_edge": False,
        "predictions": prediction.tolist(),
    }
    return {
        "method": method,
        "split": split,
        "K": K,
        "choices": {"heldout": choice, "oracle": choice},
        "crossfit": {"lds": 0.1, "lambdas": [1.0, 2.0], "per_fold": [0.1, 0.1]},
        "num_subsets": prediction.shape[0],
        "num_queries": prediction.shape[1],
    }


@pytest.fixture
def run(tmp_path):
    rng = np.random.default_rng(0)
    measured = rng.standard_normal((12, 6))
    good = measured + 0.3 * rng.standard_normal(measured.shape)
    bad = rng.standard_normal(measured.shape)
    records = [
        _record("dtrak", 10, "val", good, 0.5),
        _record("trak", 10, "val", bad, 0.1),
        _record("raw_cos", 0, "val", bad, 0.0),
    ]
    paths = []
    for index, record in enumerate(records):
        paths.append(str(tmp_path / f"{index}.json"))
        store.write_json(paths[-1], record)
    truth = tmp_path / "lds.h5"
    masks = rng.integers(0, 2, (measured.shape[0], 20)).astype(bool)
    attrs = {"pool": "lds", "num_subsets": measured.shape[0], "num_seeds": 1, "splits": ["val"]}
    files.write_groundtruth(
        truth, masks, np.arange(20), {"val": (measured[None], np.arange(6))}, attrs
    )
    return tmp_path, paths, truth, measured, good, bad


def test_summary_has_crossfit_and_paired_rows(run):
    tmp_path, paths, truth, measured, good, bad = run
    pairs = [["dtrak", "trak"], ["dtrak", "raw_cos"], ["dtrak", "missing"]]
    summarize(
        paths,
        groundtruth_path=str(truth),
        out=SummaryFiles(
            csv=str(tmp_path / "s.csv"), md=str(tmp_path / "s.md"), paired=str(tmp_path / "p.csv")
        ),
        settings=SummarySettings(experiment="x", pairs=pairs, paired_resamples=50),
    )
    with open(tmp_path / "s.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["lambda_choice"] for r in rows} == {"heldout", "oracle", "crossfit"}
    assert [r["lambda"] for r in rows if r["lambda_choice"] == "crossfit"] == ["1/2"] * 3
    with open(tmp_path / "p.csv") as handle:
        paired = list(csv.DictReader(handle))
    # raw_cos (K = 0) is compared at dtrak's K; the pair with an unknown method is left out
    assert {(r["comparison"], r["K"]) for r in paired} == {
        ("dtrak - trak", "10"),
        ("dtrak - raw_cos", "10"),
    }
    want = lds.paired_bootstrap(good, bad, measured, 50, 42)
    row = next(
        r for r in paired if r["comparison"] == "dtrak - trak" and r["lambda_choice"] == "heldout"
    )
    assert float(row["lds_diff"]) == round(100 * want["point"], 2) > 0
    assert float(row["diff_ci_low"]) == round(100 * want["ci_low"], 2)
    assert "## Paired differences" in (tmp_path / "s.md").read_text()


def test_paired_rows_need_both_predictions(run):
    _, paths, _, measured, _, _ = run
    records = [store.read_json(p) for p in paths]
    del records[1]["choices"]["heldout"]["predictions"]
    rows = paired_rows(records, {"val": measured}, [["dtrak", "trak"]], 10)
    assert [r["lambda_choice"] for r in rows] == ["oracle"]


def test_summary_takes_the_ceiling_apart(run):
    tmp_path, paths, _, _, _, _ = run
    rng = np.random.default_rng(1)
    by_seed = rng.standard_normal((2, 12, 6)) + rng.standard_normal(12)[None, :, None]
    ceiling = lds.noise_ceiling(by_seed)
    part = lds.ceiling_decomposition(by_seed)
    record = {
        "val": {"mean": ceiling["mean"], "attainable": 0.5, "seeds": 2, "decomposition": part}
    }
    store.write_json(tmp_path / "ceiling.json", record)
    summarize(
        paths,
        str(tmp_path / "ceiling.json"),
        out=SummaryFiles(csv=str(tmp_path / "s.csv"), md=str(tmp_path / "s.md")),
        settings=SummarySettings(experiment="x"),
    )
    text = (tmp_path / "s.md").read_text()
    assert f"shared {100 * part['shared_fraction']:.1f}% of the variance" in text
    assert f"per-query {100 * part['residual_seed_to_seed']:.1f}" in text


def test_noise_seed_repeats_are_summarised(tmp_path):
    prediction = np.zeros((4, 2))
    records = []
    for name, seed, value in (("d", None, 0.30), ("d_s1", 1, 0.20), ("d_s2", 2, 0.25)):
        record = _record(name, 10, "val", prediction, value)
        record["kind"] = "trak"
        record["params"] = {"output_fn": "square", "noise": "common"}
        if seed is not None:
            record["params"]["noise_seed"] = seed
        records.append(record)
    other = _record("t", 10, "val", prediction, 0.1)
    other.update(kind="trak", params={"output_fn": "loss", "noise": "common"})
    from diffattr.summary import seed_spread_rows

    (row,) = seed_spread_rows([*records, other])
    assert row["methods"] == "d, d_s1, d_s2" and row["seeds"] == 3
    assert row["heldout_mean"] == 25.0 and row["heldout_std"] == 5.0
    assert row["heldout_range"] == "20.0..30.0"


def test_a_method_without_timesteps_pairs_on_either_side(run):
    _, paths, _, measured, good, bad = run
    records = [store.read_json(p) for p in paths]
    records.append(_record("dtrak", 100, "val", good, 0.5))
    rows = paired_rows(records, {"val": measured}, [["raw_cos", "dtrak"]], 20)
    # raw_cos (K = 0) first: one row per K of dtrak, labelled with dtrak's K
    assert sorted({(r["comparison"], r["K"]) for r in rows}) == [
        ("raw_cos - dtrak", 10),
        ("raw_cos - dtrak", 100),
    ]
    want = lds.paired_bootstrap(bad, good, measured, 20, 42)
    assert rows[0]["lds_diff"] == round(100 * want["point"], 2) < 0
    # and the reverse pair gives the same rows with the sign turned
    back = paired_rows(records, {"val": measured}, [["dtrak", "raw_cos"]], 20)
    assert [(r["K"], r["lds_diff"]) for r in back] == [(r["K"], -r["lds_diff"]) for r in rows]


@pytest.mark.parametrize("rule", ["val", "own"])
def test_a_gen_record_on_val_lambda_shows_its_own_choice_beside_it(rule):
    prediction = np.zeros((4, 3))
    record = {
        **_record("dtrak", 10, "gen", prediction, 0.3),
        "heldout_rule": rule,
        "heldout_own": {"lambda": 5e7, "lambda_index": 3, "lds": 0.08},
    }
    rows = [r for r in summary_rows([record]) if r["lambda_choice"] == "heldout_own"]
    if rule == "own":
        assert rows == []
        return
    (row,) = rows
    assert (row["lambda"], row["lds"], row["lds_boot_std"]) == (5e7, 8.0, "")
