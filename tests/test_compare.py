"""diffattr.compare finds every planted difference between two result trees, and none in a copy."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest

from diffattr.compare import compare_trees, main


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "a"
    (root / "lds").mkdir(parents=True)
    with h5py.File(root / "scores.h5", "w") as handle:
        handle["scores"] = np.array([[0.5, np.nan], [1.0, -2.0]], dtype=np.float32)
        handle["group/ids"] = np.arange(3)
        handle.attrs["lds_sign"] = -1
        handle.attrs["method"] = "dtrak"
    (root / "lds" / "val.json").write_text(json.dumps({"lds": 0.25, "curve": [0.1, float("nan")]}))
    (root / "summary.csv").write_text("method,lds\ndtrak,52.9\n")
    (root / "weights.bin").write_bytes(b"\x00\x01")
    (root / "runtimes.csv").write_text("rule,seconds\ntrain,1.0\n")
    return root


def _copy(tree, name):
    other = tree.parent / name
    shutil.copytree(tree, other)
    return other


def test_a_copy_is_identical_nan_included(tree):
    differences, compared, ignored = compare_trees(tree, _copy(tree, "b"))
    assert differences == {}
    assert compared == 4 and ignored == {"runtimes.csv"}
    assert main([str(tree), str(tree.parent / "b")]) == 0


def test_one_ulp_in_a_dataset_is_found(tree):
    other = _copy(tree, "b")
    with h5py.File(other / "scores.h5", "r+") as handle:
        values = handle["scores"][()]
        values[1, 0] = np.nextafter(values[1, 0], np.float32(2))
        handle["scores"][...] = values
    differences, _, _ = compare_trees(tree, other)
    assert list(differences) == ["scores.h5"]
    assert differences["scores.h5"][0].startswith("scores: values differ")


def _flip_sign(root):
    with h5py.File(root / "scores.h5", "r+") as handle:
        handle.attrs["lds_sign"] = 1


def _drop_dataset(root):
    with h5py.File(root / "scores.h5", "r+") as handle:
        del handle["group/ids"]


@pytest.mark.parametrize(
    ("edit", "path"),
    [
        (_flip_sign, "scores.h5"),
        (_drop_dataset, "scores.h5"),
        (
            lambda root: (root / "lds" / "val.json").write_text(
                '{"lds": 0.25, "curve": [0.1, 0.0]}'
            ),
            "lds/val.json",
        ),
        (
            lambda root: (root / "lds" / "val.json").write_text(
                '{"lds": 0.25000001, "curve": [0.1, NaN]}'
            ),
            "lds/val.json",
        ),
        (lambda root: (root / "summary.csv").write_text("method,lds\ndtrak,52.8\n"), "summary.csv"),
        (lambda root: (root / "weights.bin").write_bytes(b"\x00\x02"), "weights.bin"),
        (lambda root: (root / "extra.json").write_text("{}"), "extra.json"),
        (lambda root: (root / "summary.csv").unlink(), "summary.csv"),
    ],
)
def test_every_kind_of_planted_difference_is_found(tree, edit, path):
    other = _copy(tree, "b")
    edit(other)
    differences, _, _ = compare_trees(tree, other)
    assert list(differences) == [path]
    assert main([str(tree), str(other)]) == 1


def test_an_int_and_a_float_of_equal_value_differ(tree):
    other = _copy(tree, "b")
    (other / "lds" / "val.json").write_text('{"lds": 0.25, "curve": [0.1, NaN]}')
    (tree / "lds" / "val.json").write_text('{"lds": 0.25, "curve": [0.1, NaN]}')
    assert compare_trees(tree, other)[0] == {}
    (other / "lds" / "val.json").write_text('{"lds": 0.25, "curve": [1, NaN]}')
    (tree / "lds" / "val.json").write_text('{"lds": 0.25, "curve": [1.0, NaN]}')
    assert list(compare_trees(tree, other)[0]) == ["lds/val.json"]


def test_a_missing_tree_is_an_error(tree):
    with pytest.raises(FileNotFoundError, match="not a results directory"):
        compare_trees(tree, tree.parent / "nowhere")
