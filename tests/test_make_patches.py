"""tools/make_patches.py: the second image domain (experiments/overlays/patches.yaml)."""

from __future__ import annotations

import numpy as np

from tests.tool_module import load_tool


def _tool():
    return load_tool("make_patches")


def test_patches_are_seeded_block_means_of_the_photographs():
    from sklearn.datasets import load_sample_images

    tool = _tool()
    images, labels = tool.make_patches(6, seed=3)
    again, _ = tool.make_patches(6, seed=3)
    other, _ = tool.make_patches(6, seed=4)
    assert images.shape == (6, 8, 8) and images.dtype == np.uint8
    assert np.array_equal(images, again) and not np.array_equal(images, other)
    assert labels.tolist() == [0, 1, 0, 1, 0, 1]
    # the first patch, recomputed by brute force: find its 24 x 24 window in china.jpg
    rng = np.random.default_rng(3)
    top, left = rng.integers(0, 427 - 24 + 1), rng.integers(0, 640 - 24 + 1)
    photo = load_sample_images().images[0].astype(np.float64)
    gray = 0.299 * photo[..., 0] + 0.587 * photo[..., 1] + 0.114 * photo[..., 2]
    window = gray[top : top + 24, left : left + 24]
    expected = np.array(
        [[window[3 * i : 3 * i + 3, 3 * j : 3 * j + 3].mean() for j in range(8)] for i in range(8)]
    )
    assert np.abs(images[0].astype(np.float64) - expected).max() <= 0.5 + 1e-9


def test_patches_file_is_a_valid_npz_source(tmp_path):
    from diffattr.data.sources.npz import load_npz

    out = tmp_path / "patches.npz"
    assert _tool().main(["--out", str(out), "--count", "40"]) == 0
    assert not list(tmp_path.glob("*.partial*"))
    pools = load_npz({"path": str(out), "val_pool_fraction": 0.25, "split_seed": 42})
    assert len(pools.train.labels) + len(pools.val.labels) == 40
    assert sorted(set(pools.train.labels.tolist())) == [0, 1]
