"""diffattr.compare finds every planted difference between two result trees and none in a copy;
the tolerant mode (a SLURM run against a local one) lets rounding pass, the exact mode (a
refactor that must change no result) lets nothing pass."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest

from diffattr.compare import Comparator, compare_trees, main


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "a" / "results"
    (root / "lds").mkdir(parents=True)
    (root / "report").mkdir()
    with h5py.File(root / "scores.h5", "w") as handle:
        handle["scores"] = np.array([[0.5, np.nan], [1.0, -2.0]], dtype=np.float32)
        handle["group/ids"] = np.arange(3)
        handle.attrs["lds_sign"] = -1
        handle.attrs["method"] = "dtrak"
    (root / "lds" / "val.json").write_text(json.dumps({"lds": 0.25, "curve": [0.1, float("nan")]}))
    (root / "summary.csv").write_text("method,lds\ndtrak,52.9\n")
    (root / "weights.bin").write_bytes(b"\x00\x01")
    (root / "report" / "runtimes.html").write_text("<td>train_main</td><td>12.5</td>")
    (root / "models").mkdir()
    (root / "models" / ".snakemake_timestamp").write_text("")
    return root


def _copy(tree):
    other = tree.parents[1] / "b" / "results"
    shutil.copytree(tree, other)
    return other


def _differences(a, b, exact=True):
    comparator = Comparator(exact=exact)
    counts = compare_trees(a, b, comparator)
    return comparator.diffs, counts


def _run(a, b, *flags):
    return main([str(a.parent), str(b.parent), *flags])


def test_a_copy_is_identical_nan_included(tree):
    other = _copy(tree)
    diffs, counts = _differences(tree, other)
    assert diffs == []
    # the wall-time page and Snakemake's markers are clocks, not results: left out
    assert counts == {"hdf5": 1, "csv": 1, "json": 1, "other": 1}
    assert _run(tree, other, "--exact") == 0
    (other / "report" / "runtimes.html").write_text("<td>train_main</td><td>99.0</td>")
    assert _run(tree, other, "--exact") == 0
    for root, seconds in ((tree, 1.0), (other, 2.0)):  # as results/<experiment>/report/ holds it
        (root / "digits-demo" / "report").mkdir(parents=True)
        (root / "digits-demo" / "report" / "runtimes.html").write_text(f"<td>{seconds}</td>")
    assert _run(tree, other, "--exact") == 0


def test_one_ulp_fails_exact_and_passes_the_tolerance(tree):
    other = _copy(tree)
    with h5py.File(other / "scores.h5", "r+") as handle:
        values = handle["scores"][()]
        values[1, 0] = np.nextafter(values[1, 0], np.float32(2))
        handle["scores"][...] = values
    diffs, _ = _differences(tree, other)
    assert len(diffs) == 1 and diffs[0].startswith("scores.h5:/scores: values differ"), diffs
    assert _differences(tree, other, exact=False)[0] == []
    assert _run(tree, other, "--exact") == 1
    assert _run(tree, other) == 0


def _flip_sign(root):
    with h5py.File(root / "scores.h5", "r+") as handle:
        handle.attrs["lds_sign"] = 1


def _drop_dataset(root):
    with h5py.File(root / "scores.h5", "r+") as handle:
        del handle["group/ids"]


def _float64_scores(root):
    with h5py.File(root / "scores.h5", "r+") as handle:
        values = handle["scores"][()].astype(np.float64)
        del handle["scores"]
        handle["scores"] = values


@pytest.mark.parametrize(
    ("edit", "path", "tolerated"),
    [
        (_flip_sign, "scores.h5", False),
        (_drop_dataset, "scores.h5", False),
        (_float64_scores, "scores.h5", True),  # same values, another dtype
        (
            lambda r: (r / "lds" / "val.json").write_text('{"lds": 0.25, "curve": [0.1, 0.0]}'),
            "lds/val.json",
            False,
        ),
        (
            lambda r: (r / "lds" / "val.json").write_text(
                '{"lds": 0.2500000001, "curve": [0.1, NaN]}'
            ),
            "lds/val.json",
            True,
        ),
        (
            lambda r: (r / "lds" / "val.json").write_text(
                '{"lds": 0.25, "curve": [0.1, NaN], "x": 1}'
            ),
            "lds/val.json",
            False,
        ),
        (
            lambda r: (r / "summary.csv").write_text("method,lds\ndtrak,52.8\n"),
            "summary.csv",
            False,
        ),
        (
            lambda r: (r / "summary.csv").write_text("method,lds\ndtrak,52.90\n"),
            "summary.csv",
            True,
        ),
        (lambda r: (r / "weights.bin").write_bytes(b"\x00\x02"), "weights.bin", True),
        (lambda r: (r / "extra.json").write_text("{}"), "extra.json", False),
        (lambda r: (r / "summary.csv").unlink(), "summary.csv", False),
    ],
)
def test_every_kind_of_planted_difference_is_found(tree, edit, path, tolerated):
    other = _copy(tree)
    edit(other)
    diffs, _ = _differences(tree, other)
    assert diffs and all(line.startswith(path) for line in diffs), diffs
    assert _run(tree, other, "--exact") == 1
    assert (_differences(tree, other, exact=False)[0] == []) is tolerated


def test_an_int_and_a_float_of_equal_value_differ_only_when_exact(tree):
    other = _copy(tree)
    (tree / "lds" / "val.json").write_text('{"lds": 0.25, "curve": [1.0, NaN]}')
    (other / "lds" / "val.json").write_text('{"lds": 0.25, "curve": [1, NaN]}')
    diffs = _differences(tree, other)[0]
    assert len(diffs) == 1 and diffs[0].startswith("lds/val.json.curve[0]: 1.0 (float)"), diffs
    assert _differences(tree, other, exact=False)[0] == []


def test_a_missing_tree_is_a_usage_error(tree, tmp_path):
    assert main([str(tree.parent), str(tmp_path / "nowhere")]) == 2
