"""`diffattr prepare-data`, offline, from local stand-ins of the official files; the result is
read by the paper configs' data blocks (with only the sizes shrunk)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import yaml
from PIL import Image

from diffattr.cli import main
from diffattr.data.sources import load_source
from tests.workflow_utils import ROOT

datasets = pytest.importorskip("datasets")


def paper_data(name: str, root, **sizes) -> dict:
    config = yaml.safe_load((ROOT / "experiments" / name).read_text())
    data = dict(config["data"])
    for key in ("path", "csv"):
        if key in data:
            data[key] = str(root / data[key])
    return {**data, **sizes}


def fake_cifar_batches(folder, per_batch=4):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    pixels = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = [1, 7, 1, 7][:per_batch]
        with open(folder / name, "wb") as handle:
            pickle.dump({"data": data, "labels": labels}, handle)
        pixels[name] = data
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog",
                                     "frog", "horse", "ship", "truck"]}, handle)  # fmt: skip
    return pixels


def test_cifar10_from_the_python_batches_feeds_cifar2(tmp_path, capsys):
    pixels = fake_cifar_batches(tmp_path / "download" / "cifar-10-batches-py")
    root = tmp_path / "work"
    code = main(
        ["prepare-data", "cifar10", "--root", str(root), "--from", str(tmp_path / "download")]
    )
    assert code == 0 and "data/cifar10" in capsys.readouterr().out
    pools = load_source(paper_data("cifar2.yaml", root, train_size=8, val_size=2))
    assert pools.class_names == ["automobile", "horse"]
    assert len(pools.train.labels) == 20 and len(pools.val.labels) == 4  # 5 x 4 and 1 x 4 rows
    first = np.asarray(pools.train.images[0])
    expected = pixels["data_batch_1"][0].reshape(3, 32, 32).transpose(1, 2, 0)
    np.testing.assert_array_equal(first, expected)
    # an existing copy is never replaced silently
    again = main(
        ["prepare-data", "cifar10", "--root", str(root), "--from", str(tmp_path / "download")]
    )
    assert again == 2 and "--force" in capsys.readouterr().err


def test_cifar10_from_a_save_to_disk_folder(tmp_path):
    features = datasets.Features(
        {"img": datasets.Image(), "label": datasets.ClassLabel(names=["automobile", "horse"])}
    )
    images = [Image.fromarray(np.full((32, 32, 3), v, np.uint8)) for v in (10, 200)]
    split = datasets.Dataset.from_dict({"img": images, "label": [0, 1]}, features=features)
    datasets.DatasetDict({"train": split, "test": split}).save_to_disk(str(tmp_path / "saved"))
    assert (
        main(
            [
                "prepare-data",
                "cifar10",
                "--root",
                str(tmp_path / "w"),
                "--from",
                str(tmp_path / "saved"),
            ]
        )
        == 0
    )
    loaded = datasets.load_from_disk(str(tmp_path / "w" / "data" / "cifar10"))
    assert loaded["train"].num_rows == 2 and set(loaded) == {"train", "test"}


def test_celeba_from_the_official_layout(tmp_path):
    source = tmp_path / "celeba"
    (source / "img_align_celeba").mkdir(parents=True)
    lines = []
    for i in range(9):
        name = f"{i + 1:06d}.jpg"
        Image.fromarray(np.full((218, 178, 3), 20 * i, np.uint8)).save(
            source / "img_align_celeba" / name
        )
        lines.append(f"{name} {0 if i < 6 else 1 if i < 8 else 2}")
    (source / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    root = tmp_path / "work"
    assert main(["prepare-data", "celeba", "--root", str(root), "--from", str(source)]) == 0
    assert (root / "data" / "celeba" / "img_align_celeba").is_symlink()
    pools = load_source(paper_data("celeba.yaml", root, train_size=4, val_size=2))
    assert len(pools.train.labels) == 6 and len(pools.val.labels) == 2
    assert pools.class_names == ["face"]


def test_artbench_from_the_official_layout_and_bad_sources(tmp_path, capsys):
    source = tmp_path / "artbench"
    rows = ["name,label,split"]
    for style in ("post_impressionism", "ukiyo_e", "baroque"):
        (source / "artbench-10-imagefolder" / style).mkdir(parents=True)
        for i, split in enumerate(["train", "train", "test"]):
            name = f"{style}-{i}.jpg"
            Image.fromarray(np.full((256, 256, 3), 40 * i, np.uint8)).save(
                source / "artbench-10-imagefolder" / style / name
            )
            rows.append(f"{name},{style},{split}")
    (source / "ArtBench-10.csv").write_text("\n".join(rows) + "\n")
    root = tmp_path / "work"
    assert (
        main(["prepare-data", "artbench", "--root", str(root), "--from", str(source), "--copy"])
        == 0
    )
    pools = load_source(paper_data("artbench2.yaml", root, train_size=2, val_size=2))
    assert pools.class_names == ["post_impressionism", "ukiyo_e"]
    assert len(pools.train.labels) == 4 and len(pools.val.labels) == 2
    # wrong folders and no hub copy: one clear line each
    assert main(["prepare-data", "celeba", "--root", str(root), "--from", str(source)]) == 2
    assert "official CelebA layout" in capsys.readouterr().err
    assert main(["prepare-data", "artbench", "--root", str(tmp_path / "x")]) == 2
    assert "no official hub copy" in capsys.readouterr().err
