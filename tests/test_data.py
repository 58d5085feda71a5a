"""Tests of diffattr.data: sources, class filter, preprocessing, splits and subsets."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffattr.data import (
    ImagePool,
    draw_subset,
    load_source,
    load_split,
    prepare_dataset,
    preprocess_image,
    read_subset,
    removal_subset,
    select_rows,
    subset_mask,
    write_subset,
)
from diffattr.errors import ConfigError, CorruptFileError, DataError
from diffattr.store import read_attrs

STYLES = ["post_impressionism", "ukiyo_e", "baroque"]


def _png(path: Path, value: int, size=(12, 10)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.full((size[1], size[0], 3), value, dtype=np.uint8)
    array[0, 0] = (255, 0, 0)
    Image.fromarray(array).save(path)


def _write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture
def artbench(tmp_path: Path) -> dict:
    """ArtBench layout: columns name, label, split; images at {root}/{label}/{name}."""
    root = tmp_path / "imgs"
    rows = []
    for i in range(36):
        style = STYLES[i % 3]
        split = "train" if i % 4 else "test"
        name = f"img{i}.png"
        _png(root / style / name, 7 * i)
        rows.append({"name": name, "artist": "x", "label": style, "split": split})
    _write_csv(tmp_path / "art.csv", rows)
    return {
        "source": "imagefolder",
        "path": str(root),
        "csv": str(tmp_path / "art.csv"),
        "classes": ["post_impressionism", "ukiyo_e"],
        "caption_template": "a {label} painting",
        "resolution": 8,
        "channels": 3,
        "train_size": 10,
        "val_size": 4,
    }


@pytest.fixture
def pathfolder(tmp_path: Path) -> dict:
    """Path layout: columns path, label, caption; no split column."""
    root = tmp_path / "folder"
    rows = []
    for i in range(20):
        label = "cat" if i % 2 else "dog"
        rel = f"sub/{i}.png"
        _png(root / rel, 5 * i, size=(9, 9))
        rows.append({"path": rel, "label": label, "caption": f"photo {i}"})
    _write_csv(tmp_path / "index.csv", rows)
    return {
        "source": "imagefolder",
        "path": str(root),
        "csv": str(tmp_path / "index.csv"),
        "caption_column": "caption",
        "val_pool_fraction": 0.25,
        "train_size": 8,
        "val_size": 2,
    }


# ------------------------------------------------------------------------------ sources


def test_digits_pools():
    pools = load_source({"source": "digits"})
    assert pools.class_names == [str(d) for d in range(10)]
    train, val = pools.train, pools.val
    assert len(train) + len(val) == 1797
    assert len(val) == math.ceil(0.25 * 1797)  # sklearn rounds the test share up
    assert not set(train.ids) & set(val.ids)
    assert np.all(np.diff(train.ids) > 0)
    images = np.asarray(train.images)
    assert images.dtype == np.uint8 and images.shape[1:] == (8, 8, 1) and images.max() == 255
    # ids are rows of load_digits(): the label must match
    from sklearn.datasets import load_digits

    assert np.array_equal(load_digits().target[train.ids], train.labels)


def test_unknown_source_lists_valid():
    with pytest.raises(ConfigError, match=r"'mnist'.*digits.*imagefolder.*npz.*huggingface"):
        load_source({"source": "mnist"})


def test_class_filter_names_ints_and_remap():
    by_name = load_source({"source": "digits", "classes": ["7", "3"]})
    by_int = load_source({"source": "digits", "classes": [7, 3]})
    assert by_name.class_names == by_int.class_names == ["7", "3"]
    assert np.array_equal(by_name.train.ids, by_int.train.ids)
    assert set(by_name.train.labels) == {0, 1}
    assert set(by_name.train.source_labels[by_name.train.labels == 0]) == {7}
    assert set(by_name.val.source_labels[by_name.val.labels == 1]) == {3}


@pytest.mark.parametrize(
    "classes, error, pattern",
    [
        (["eleven"], DataError, r"'eleven'.*available class names: \['0', '1'"),
        ([12], DataError, r"12.*out of range 0\.\.9"),
        ([3, "3"], ConfigError, r"twice"),
        ([], ConfigError, r"non-empty"),
        ([1.5], ConfigError, r"1\.5"),
    ],
)
def test_class_filter_errors(classes, error, pattern):
    with pytest.raises(error, match=pattern):
        load_source({"source": "digits", "classes": classes})


def test_imagefolder_artbench_layout(artbench):
    pools = load_source(artbench)
    assert pools.class_names == ["post_impressionism", "ukiyo_e"]
    # split column: test rows are i % 4 == 0; classes filter keeps styles 0 and 1 (i % 3 != 2)
    expect_train = [i for i in range(36) if i % 4 and i % 3 != 2]
    expect_val = [i for i in range(36) if i % 4 == 0 and i % 3 != 2]
    assert pools.train.ids.tolist() == expect_train
    assert pools.val.ids.tolist() == expect_val
    assert pools.train.captions[0] == "a ukiyo e painting"  # row 1 is ukiyo_e
    assert set(pools.val.captions) == {"a post impressionism painting", "a ukiyo e painting"}
    image = pools.train.images[0]
    assert image.shape == (10, 12, 3) and image[0, 0].tolist() == [255, 0, 0]
    assert pools.train.paths[0].endswith("ukiyo_e/img1.png")


def test_imagefolder_path_layout_and_captions(pathfolder, tmp_path):
    pools = load_source(pathfolder)
    assert pools.class_names == ["cat", "dog"]
    assert len(pools.train) == 15 and len(pools.val) == 5
    assert pools.train.captions == [f"photo {i}" for i in pools.train.ids]
    out = tmp_path / "ds.h5"
    prepare_dataset({**pathfolder, "resolution": 4, "channels": 1}, out)
    train = load_split(out, "train")
    assert train.images.shape == (8, 1, 4, 4)
    assert train.captions == [f"photo {i}" for i in train.ids]
    assert np.bincount(train.labels).tolist() == [4, 4]


@pytest.mark.parametrize(
    "change, pattern",
    [
        ({"path": "/nonexistent/root"}, r"/nonexistent/root.*does not exist"),
        ({"csv": "/nonexistent/x.csv"}, r"/nonexistent/x\.csv.*does not exist"),
        ({"label_column": "style"}, r"'style'.*columns are \['path', 'label', 'caption'\]"),
        ({"caption_column": "text"}, r"'text'.*columns are"),
        ({"path_column": "file"}, r"'file'.*'name'"),
    ],
)
def test_imagefolder_errors(pathfolder, change, pattern):
    with pytest.raises(DataError, match=pattern):
        load_source({**pathfolder, **change})


def test_imagefolder_bad_split_name(artbench):
    with pytest.raises(DataError, match=r"'validation'.*values present: \['test', 'train'\]"):
        load_source({**artbench, "val_split_name": "validation"})


def test_npz_two_arrays_float_images(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "two.npz"
    np.savez(
        path,
        train_images=rng.random((12, 6, 6, 3)).astype(np.float32),
        train_labels=np.arange(12) % 2,
        val_images=rng.integers(0, 256, (6, 6, 6), dtype=np.uint8),
        val_labels=np.arange(6) % 2,
        class_names=np.array(["a", "b"]),
    )
    pools = load_source({"source": "npz", "path": str(path)})
    assert pools.class_names == ["a", "b"]
    assert pools.train.ids.tolist() == list(range(12))
    assert np.asarray(pools.train.images).dtype == np.uint8
    assert np.asarray(pools.val.images).shape == (6, 6, 6, 1)


def test_npz_single_array_and_errors(tmp_path):
    path = tmp_path / "one.npz"
    np.savez(path, images=np.zeros((40, 4, 4), np.uint8), labels=np.arange(40) % 4)
    pools = load_source({"source": "npz", "path": str(path), "val_pool_fraction": 0.5})
    assert len(pools.train) == len(pools.val) == 20
    assert np.bincount(pools.val.labels).tolist() == [5, 5, 5, 5]
    assert pools.class_names == ["0", "1", "2", "3"]
    bad = tmp_path / "bad.npz"
    np.savez(bad, pictures=np.zeros((2, 4, 4)))
    with pytest.raises(DataError, match=r"\['pictures'\].*\['images', 'labels'\]"):
        load_source({"source": "npz", "path": str(bad)})
    outside = tmp_path / "outside.npz"
    np.savez(outside, images=np.full((4, 2, 2), 2.0), labels=np.zeros(4, int))
    with pytest.raises(DataError, match=r"values in \[2\.0, 2\.0\]"):
        load_source({"source": "npz", "path": str(outside)})
    with pytest.raises(ConfigError, match=r"data\.path is required"):
        load_source({"source": "npz"})


def test_huggingface_saved_to_disk(tmp_path):
    datasets = pytest.importorskip("datasets")
    features = datasets.Features(
        {
            "img": datasets.Image(),
            "label": datasets.ClassLabel(names=["airplane", "automobile", "bird", "horse"]),
        }
    )

    def split(n: int, offset: int):
        images = [Image.fromarray(np.full((5, 5, 3), offset + i, np.uint8)) for i in range(n)]
        return datasets.Dataset.from_dict(
            {"img": images, "label": [i % 4 for i in range(n)]}, features=features
        )

    path = tmp_path / "hf"
    datasets.DatasetDict({"train": split(16, 0), "test": split(8, 100)}).save_to_disk(str(path))
    cfg = {
        "source": "huggingface",
        "path": str(path),
        "classes": ["automobile", "horse"],
        "resolution": 4,
        "channels": 3,
        "train_size": 6,
        "val_size": 4,
    }
    pools = load_source(cfg)
    assert pools.class_names == ["automobile", "horse"]
    assert pools.train.ids.tolist() == [1, 3, 5, 7, 9, 11, 13, 15]
    assert pools.val.images[1][0, 0].tolist() == [103, 103, 103]
    out = tmp_path / "cifar.h5"
    prepare_dataset(cfg, out)
    val = load_split(out, "val")
    assert val.images.shape == (4, 3, 4, 4) and val.captions is None
    # pixel value offset + id survives preprocessing of a constant image
    expected = (100 + val.ids) / 255.0 * 2 - 1
    assert np.allclose(val.images[:, 0, 0, 0], expected, atol=1e-6)
    with pytest.raises(DataError, match=r"'validation'.*splits are \['test', 'train'\]"):
        load_source({**cfg, "val_split_name": "validation"})
    with pytest.raises(DataError, match=r"'image'.*columns are \['img', 'label'\]"):
        load_source({**cfg, "image_column": "image"})
    with pytest.raises(ConfigError, match=r"exactly one of data\.name"):
        load_source({**cfg, "name": "cifar10"})


# ------------------------------------------------------------------------------ preprocessing


def test_preprocess_shapes_and_range():
    image = np.zeros((20, 30, 3), np.uint8)
    image[:, 10:20] = 255  # white centre band, black sides
    out = preprocess_image(image, resolution=8, channels=3)
    assert out.shape == (3, 8, 8) and out.dtype == np.float32
    assert out.min() >= -1 and out.max() <= 1 and out.max() == 1.0
    gray = preprocess_image(image, resolution=8, channels=1)
    assert gray.shape == (1, 8, 8)
    cropped = preprocess_image(image, resolution=4, channels=1, center_crop=10)
    assert np.allclose(cropped, 1.0)  # the 10x10 centre crop is all white
    from_gray = preprocess_image(np.full((4, 4), 0, np.uint8), resolution=4, channels=3)
    assert from_gray.shape == (3, 4, 4) and np.allclose(from_gray, -1.0)
    with pytest.raises(DataError, match=r"center-crop 50x50 from a 30x20"):
        preprocess_image(image, resolution=8, channels=3, center_crop=50)


@pytest.mark.parametrize(
    "change, pattern",
    [
        ({"channels": 2}, r"data\.channels = 2"),
        ({"resolution": 0}, r"data\.resolution = 0"),
        ({"center_crop": -3}, r"data\.center_crop = -3"),
        ({"train_size": None}, r"data\.train_size is required"),
    ],
)
def test_prepare_config_errors(tmp_path, change, pattern):
    cfg = {"source": "digits", "train_size": 10, "val_size": 10, **change}
    with pytest.raises(ConfigError, match=pattern):
        prepare_dataset(cfg, tmp_path / "x.h5")
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------ splits


def test_prepare_digits_layout_and_attrs(tmp_path):
    cfg = {"source": "digits", "classes": [1, 7], "train_size": 40, "val_size": 20}
    out = tmp_path / "ds.h5"
    prepare_dataset(cfg, out)
    pools = load_source(cfg)
    train, val = load_split(out, "train"), load_split(out, "val")
    assert train.images.shape == (40, 1, 16, 16) and train.images.dtype == np.float32
    assert -1 <= train.images.min() and train.images.max() <= 1
    assert np.bincount(train.labels).tolist() == [20, 20]
    assert np.bincount(val.labels).tolist() == [10, 10]
    assert set(train.ids) <= set(pools.train.ids) and set(val.ids) <= set(pools.val.ids)
    assert train.class_names == ["1", "7"] and train.captions is None
    # the reference recipe: train_test_split over the pool, rows in the returned order
    from sklearn.model_selection import train_test_split

    ref, _ = train_test_split(
        pools.train.ids, train_size=40, random_state=42, stratify=pools.train.source_labels
    )
    assert train.ids.tolist() == list(ref)
    attrs = read_attrs(out)
    assert attrs["n_train"] == 40 and attrs["n_val"] == 20 and attrs["class_names"] == ["1", "7"]
    assert attrs["source"] == "digits" and attrs["classes"] == [1, 7] and attrs["channels"] == 1


def test_prepare_full_pool_and_too_large(tmp_path):
    cfg = {"source": "digits", "classes": [0]}
    pools = load_source(cfg)
    n_train, n_val = len(pools.train), len(pools.val)
    out = tmp_path / "full.h5"
    prepare_dataset({**cfg, "train_size": n_train, "val_size": n_val}, out)
    assert load_split(out, "train").ids.tolist() == pools.train.ids.tolist()
    bad = tmp_path / "bad.h5"
    with pytest.raises(DataError, match=rf"data\.train_size = {n_train + 1}.*\({n_train} rows\)"):
        prepare_dataset({**cfg, "train_size": n_train + 1, "val_size": 3}, bad)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full.h5"]


def test_prepare_leaves_no_file_on_failure(artbench, tmp_path):
    (Path(artbench["path"]) / "ukiyo_e" / "img1.png").unlink()
    out = tmp_path / "out" / "art.h5"
    with pytest.raises(DataError, match=r"img1\.png does not exist"):
        prepare_dataset({**artbench, "train_size": 18}, out)
    assert not out.exists() and not list(out.parent.iterdir())


def test_prepare_artbench_captions(artbench, tmp_path):
    out = tmp_path / "art.h5"
    prepare_dataset(artbench, out)
    train = load_split(out, "train")
    assert train.images.shape == (10, 3, 8, 8)
    assert np.bincount(train.labels).tolist() == [5, 5]
    names = {0: "a post impressionism painting", 1: "a ukiyo e painting"}
    assert train.captions == [names[label] for label in train.labels]


def test_load_split_rejects_bad_names(tmp_path):
    out = tmp_path / "ds.h5"
    prepare_dataset({"source": "digits", "train_size": 20, "val_size": 10}, out)
    with pytest.raises(ConfigError, match=r"'test'.*\['train', 'val'\]"):
        load_split(out, "test")
    with pytest.raises(CorruptFileError, match="does not exist"):
        load_split(tmp_path / "missing.h5", "train")


def test_load_split_reads_only_the_first_rows(artbench, tmp_path):
    out = tmp_path / "ds.h5"
    prepare_dataset(artbench, out)
    whole, first = load_split(out, "train"), load_split(out, "train", first=3)
    np.testing.assert_array_equal(first.images, whole.images[:3])
    assert first.ids.tolist() == whole.ids[:3].tolist()
    assert first.labels.tolist() == whole.labels[:3].tolist()
    assert first.captions == whole.captions[:3]
    assert len(load_split(out, "train", first=10**6).ids) == len(whole.ids)
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ConfigError, match=f"first = {bad!r} is not valid"):
            load_split(out, "train", first=bad)


def test_select_rows_errors():
    labels = np.array([0, 1] * 5)
    with pytest.raises(ConfigError, match=r"size = 0"):
        select_rows(labels, 0, 42, True, "size")
    with pytest.raises(DataError, match=r"size = 11 .*\(10 rows\)"):
        select_rows(labels, 11, 42, True, "size")
    assert select_rows(labels, 10, 42, True, "size").tolist() == list(range(10))


def test_image_pool_length_check():
    with pytest.raises(DataError, match=r"3 labels.*'ids': 2"):
        ImagePool(images=np.zeros((3, 2, 2, 1), np.uint8), labels=[0, 1, 0], ids=[0, 1])


# ------------------------------------------------------------------------------ subsets


@pytest.fixture
def labels() -> np.ndarray:
    return np.array([0] * 7 + [1] * 12 + [2] * 5)


def test_subset_purity_and_variation(labels):
    first = [draw_subset(labels, 0.5, pool_seed=1, k=k) for k in range(3)]
    more = [draw_subset(labels, 0.5, pool_seed=1, k=k) for k in range(10)]
    for a, b in zip(first, more[:3], strict=True):
        assert np.array_equal(a, b)
    assert not np.array_equal(more[0], more[1])
    assert not np.array_equal(draw_subset(labels, 0.5, 2, 0), more[0])
    assert len({tuple(s) for s in more}) == 10


def test_subset_stratified_counts(labels):
    for k in range(5):
        positions = draw_subset(labels, 0.5, 0, k)
        assert positions.dtype == np.int64 and np.all(np.diff(positions) > 0)
        assert len(positions) == 12  # round(0.5 * 24)
        counts = np.bincount(labels[positions], minlength=3)
        # exact 3.5 / 6 / 2.5: floors 3 / 6 / 2, the one spare row goes to class 0 (tie, first)
        assert counts.tolist() == [4, 6, 2]
    positions = draw_subset(labels, 0.3, 0, 0)
    assert len(positions) == 7  # round(7.2)
    assert np.all(np.abs(np.bincount(labels[positions]) - 0.3 * np.bincount(labels)) < 1)


def test_subset_unstratified(labels):
    positions = draw_subset(labels, 0.25, 3, 4, stratify=False)
    assert len(positions) == 6 and np.array_equal(
        positions, draw_subset(labels, 0.25, 3, 4, stratify=False)
    )


@pytest.mark.parametrize(
    "alpha, pool_seed, k, error, pattern",
    [
        (1.0, 0, 0, ConfigError, r"alpha = 1\.0"),
        (0.0, 0, 0, ConfigError, r"alpha = 0\.0"),
        (float("nan"), 0, 0, ConfigError, r"alpha = nan"),
        (0.01, 0, 0, DataError, r"alpha = 0\.01 of 24 .* 0 rows"),
        (0.99, 0, 0, DataError, r"24 rows"),
        (0.5, -1, 0, ConfigError, r"pool_seed = -1"),
        (0.5, 0, 1.5, ConfigError, r"k = 1\.5"),
    ],
)
def test_subset_errors(labels, alpha, pool_seed, k, error, pattern):
    with pytest.raises(error, match=pattern):
        draw_subset(labels, alpha, pool_seed, k)


def test_subset_files(tmp_path, labels):
    positions = draw_subset(labels, 0.5, 7, 2)
    attrs = {"pool": "lds", "k": 2, "alpha": 0.5, "pool_seed": 7, "n_train": 24}
    path = tmp_path / "sub" / "2.h5"
    write_subset(path, positions, attrs)
    assert np.array_equal(read_subset(path), positions)
    stored = read_attrs(path)
    assert {key: stored[key] for key in attrs} == attrs
    with pytest.raises(ConfigError, match=r"\['pool_seed'\]"):
        write_subset(
            tmp_path / "x.h5", positions, {k: v for k, v in attrs.items() if k != "pool_seed"}
        )
    with pytest.raises(DataError, match=r"position 30 is outside .* 0\.\.23"):
        write_subset(tmp_path / "x.h5", np.array([1, 30]), attrs)
    with pytest.raises(DataError, match="sorted and unique"):
        write_subset(tmp_path / "x.h5", np.array([3, 1]), attrs)
    assert not (tmp_path / "x.h5").exists()


def test_mask_and_removal():
    mask = subset_mask([np.array([0, 2]), np.array([1]), np.array([], np.int64)], 4)
    assert mask.tolist() == [
        [True, False, True, False],
        [False, True, False, False],
        [False, False, False, False],
    ]
    with pytest.raises(DataError, match=r"subset 1: position 4 is outside"):
        subset_mask([np.array([0]), np.array([4])], 4)
    assert removal_subset(6, np.array([4, 1])).tolist() == [0, 2, 3, 5]
    assert removal_subset(3, np.array([], np.int64)).tolist() == [0, 1, 2]
    with pytest.raises(DataError, match=r"position -1 is outside"):
        removal_subset(6, np.array([-1]))
    with pytest.raises(DataError, match="leaves none of the 2"):
        removal_subset(2, np.array([0, 1]))
