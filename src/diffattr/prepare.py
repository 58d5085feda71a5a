"""``diffattr prepare-data cifar10|celeba|artbench``: put a paper dataset where the paper configs
in ``experiments/`` read it, relative to the directory Snakemake runs in (``--root``):

========  =========================================================  ==============================
dataset   written                                                    read by
========  =========================================================  ==============================
cifar10   ``data/cifar10/`` (a ``DatasetDict.save_to_disk`` folder:   cifar2.yaml, cifar10.yaml
          splits train / test, columns img, label)                   (``data.path``)
celeba    ``data/celeba/img_align_celeba/`` and                      celeba.yaml
          ``data/celeba/celeba.csv`` (path, label, split)
artbench  ``data/artbench/artbench-10-imagefolder/{style}/{name}``   artbench2.yaml, artbench5.yaml
          and ``data/artbench/ArtBench-10.csv`` (name, label, split)
========  =========================================================  ==============================

Two ways in:

* **online** (no ``--from``): from the Hugging Face hub through ``datasets.load_dataset``
  (``--hub-name``; CIFAR-10 defaults to ``cifar10``; CelebA and ArtBench have no official hub
  copy, so name the one you trust). Hub image datasets are written out as image files + CSV.
* **offline** (``--from DIR``): from files you already have. CIFAR-10: a ``save_to_disk`` folder
  or the official python version (``cifar-10-batches-py/``: ``data_batch_1..5``,
  ``test_batch``, ``batches.meta``). CelebA: the official layout, ``img_align_celeba/`` and
  ``list_eval_partition.txt`` (partition 0 → train, 1 → val, 2 → test). ArtBench-10: the official
  ``ArtBench-10.csv`` and ``artbench-10-imagefolder/``. Image folders are linked (symlinks), not
  copied, unless ``--copy``.

Nothing is overwritten: an existing destination is an error unless ``--force``.
"""

from __future__ import annotations

import csv
import io
import os
import pickle
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from diffattr.errors import ConfigError, DataError

DATASETS = ("cifar10", "celeba", "artbench")
CIFAR10_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]
CELEBA_PARTITIONS = {"0": "train", "1": "val", "2": "test"}
#: Hub split names → the split names the paper configs read.
CELEBA_HUB_SPLITS = {"train": "train", "validation": "val", "valid": "val", "test": "test"}
ARTBENCH_HUB_SPLITS = {"train": "train", "test": "test"}


def destinations(dataset: str, root: str | os.PathLike = ".") -> dict[str, Path]:
    """Where the paper configs look for ``dataset`` (relative to the workflow's directory)."""
    root = Path(root)
    if dataset == "cifar10":
        return {"dataset": root / "data" / "cifar10"}
    if dataset == "celeba":
        base = root / "data" / "celeba"
        return {"images": base / "img_align_celeba", "csv": base / "celeba.csv"}
    if dataset == "artbench":
        base = root / "data" / "artbench"
        return {"images": base / "artbench-10-imagefolder", "csv": base / "ArtBench-10.csv"}
    raise ConfigError(f"unknown dataset {dataset!r}; valid: {', '.join(DATASETS)}")


def prepare_data(
    dataset: str,
    root: str | os.PathLike = ".",
    source: str | os.PathLike | None = None,
    hub_name: str | None = None,
    copy: bool = False,
    force: bool = False,
) -> dict[str, Path]:
    """Write ``dataset`` to :func:`destinations`; returns them. See the module docstring."""
    out = destinations(dataset, root)
    existing = [str(p) for p in out.values() if p.exists() or p.is_symlink()]
    if existing and not force:
        raise DataError(f"{', '.join(existing)} already exist(s); pass --force to replace")
    for path in out.values():
        _remove(path)
    if source is not None and hub_name is not None:
        raise ConfigError("give either --from (offline) or --hub-name (online), not both")
    if source is not None:
        source = Path(source)
        if not source.exists():
            raise DataError(f"--from {str(source)!r}: no such folder")
        {"cifar10": _cifar10_offline, "celeba": _celeba_offline, "artbench": _artbench_offline}[
            dataset
        ](source, out, copy)
    else:
        _online(dataset, hub_name, out)
    return out


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def _link_or_copy(source: Path, dest: Path, copy: bool) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if copy:
        shutil.copytree(source, dest)
    else:
        dest.symlink_to(source.resolve(), target_is_directory=True)


def _write_csv(path: Path, columns: list[str], rows: list[Mapping[str, Any]]) -> None:
    from diffattr.store import write_text
    from diffattr.tables import csv_text

    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, csv_text(rows, columns))


def _datasets() -> Any:
    try:
        import datasets
    except ImportError as error:
        raise ConfigError(
            "prepare-data needs the `datasets` package: pip install 'diffattr[hub]'"
        ) from error
    return datasets


# --------------------------------------------------------------------------- CIFAR-10


def _cifar10_offline(source: Path, out: dict[str, Path], copy: bool) -> None:
    datasets = _datasets()
    batches = (
        source / "cifar-10-batches-py" if (source / "cifar-10-batches-py").is_dir() else source
    )
    if (batches / "data_batch_1").is_file():
        splits = {
            "train": [batches / f"data_batch_{i}" for i in range(1, 6)],
            "test": [batches / "test_batch"],
        }
        missing = [str(p) for files in splits.values() for p in files if not p.is_file()]
        if missing:
            raise DataError(f"--from {str(source)!r}: CIFAR-10 python batches missing: {missing}")
        names = CIFAR10_CLASSES
        if (batches / "batches.meta").is_file():
            with open(batches / "batches.meta", "rb") as handle:
                meta = pickle.load(handle, encoding="latin1")
            names = [str(n) for n in meta.get("label_names", names)]
        features = datasets.Features(
            {"img": datasets.Image(), "label": datasets.ClassLabel(names=names)}
        )
        parts = {}
        for split, files in splits.items():
            images, labels = [], []
            for path in files:
                with open(path, "rb") as handle:
                    batch = pickle.load(handle, encoding="latin1")
                data = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
                images.extend(data.transpose(0, 2, 3, 1))
                labels.extend(int(v) for v in batch["labels"])
            parts[split] = datasets.Dataset.from_dict(
                {"img": [_png(i) for i in images], "label": labels}, features=features
            )
        loaded = datasets.DatasetDict(parts)
    else:
        try:
            loaded = datasets.load_from_disk(str(source))
        except Exception as error:
            raise DataError(
                f"--from {str(source)!r}: neither the CIFAR-10 python batches "
                "(cifar-10-batches-py/data_batch_1 ...) nor a save_to_disk folder "
                f"({type(error).__name__}: {error})"
            ) from None
    _save_cifar10(loaded, out["dataset"])


def _png(pixels: np.ndarray) -> dict[str, Any]:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def _save_cifar10(loaded: Any, dest: Path) -> None:
    if not hasattr(loaded, "keys") or not {"train", "test"} <= set(loaded.keys()):
        raise DataError(
            f"CIFAR-10 must have splits train and test; got {sorted(getattr(loaded, 'keys', list)())}"
        )
    for split in ("train", "test"):
        columns = loaded[split].column_names
        if "img" not in columns and "image" in columns:
            loaded[split] = loaded[split].rename_column("image", "img")
        if not {"img", "label"} <= set(loaded[split].column_names):
            raise DataError(
                f"CIFAR-10 split {split!r} needs columns img and label; it has {columns}"
            )
    from diffattr.store import atomic_dir

    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(dest) as tmp:
        loaded.save_to_disk(str(tmp))


# --------------------------------------------------------------------------- CelebA


def _celeba_offline(source: Path, out: dict[str, Path], copy: bool) -> None:
    images = source / "img_align_celeba"
    partition = source / "list_eval_partition.txt"
    if not images.is_dir() or not partition.is_file():
        raise DataError(
            f"--from {str(source)!r}: expected the official CelebA layout, img_align_celeba/ "
            "and list_eval_partition.txt"
        )
    rows = []
    for number, line in enumerate(partition.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or parts[1] not in CELEBA_PARTITIONS:
            raise DataError(f"{partition}:{number}: expected '<image> <0|1|2>', got {line!r}")
        rows.append({"path": parts[0], "label": "face", "split": CELEBA_PARTITIONS[parts[1]]})
    missing = [r["path"] for r in rows if not (images / r["path"]).is_file()]
    if missing:
        raise DataError(
            f"{images}: {len(missing)} partition-listed images missing, e.g. {missing[:3]}"
        )
    _link_or_copy(images, out["images"], copy)
    _write_csv(out["csv"], ["path", "label", "split"], rows)


# --------------------------------------------------------------------------- ArtBench


def _artbench_offline(source: Path, out: dict[str, Path], copy: bool) -> None:
    table = source / "ArtBench-10.csv"
    images = source / "artbench-10-imagefolder"
    if not table.is_file() or not images.is_dir():
        raise DataError(
            f"--from {str(source)!r}: expected the official ArtBench-10 layout, ArtBench-10.csv "
            "and artbench-10-imagefolder/{style}/{name}"
        )
    with open(table, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = list(reader.fieldnames or [])
        rows = list(reader)
    if not {"name", "label", "split"} <= set(columns):
        raise DataError(f"{table}: needs columns name, label, split; it has {columns}")
    missing = [r["name"] for r in rows if not (images / r["label"] / r["name"]).is_file()]
    if missing:
        raise DataError(f"{images}: {len(missing)} listed images missing, e.g. {missing[:3]}")
    _link_or_copy(images, out["images"], copy)
    out["csv"].parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(table, out["csv"])


# --------------------------------------------------------------------------- online


def _online(dataset: str, hub_name: str | None, out: dict[str, Path]) -> None:
    datasets = _datasets()
    if hub_name is None:
        if dataset != "cifar10":
            raise ConfigError(
                f"{dataset}: there is no official hub copy; pass --hub-name with the dataset you "
                f"trust, or --from a folder with the official files (see docs/reproducing-the-paper.md)"
            )
        hub_name = "cifar10"
    try:
        loaded = datasets.load_dataset(hub_name)
    except Exception as error:  # the hub client raises many unrelated types
        raise DataError(
            f"--hub-name {hub_name!r}: datasets.load_dataset failed ({type(error).__name__}: "
            f"{error}); offline, use --from with a folder you have"
        ) from None
    if dataset == "cifar10":
        _save_cifar10(loaded, out["dataset"])
        return
    splits = CELEBA_HUB_SPLITS if dataset == "celeba" else ARTBENCH_HUB_SPLITS
    export_image_folder(loaded, out, splits, label=None if dataset == "celeba" else "label")


def export_image_folder(
    loaded: Any,
    out: Mapping[str, Path],
    split_names: Mapping[str, str],
    label: str | None,
) -> None:
    """Write a hub ``DatasetDict`` of images as ``out['images']`` files + ``out['csv']``.

    ``label`` None: every row is labelled "face" and the CSV has ``path`` (CelebA's layout);
    else the CSV has ArtBench's ``name, label, split`` with images at ``{label}/{name}``.
    """
    from diffattr.api import _dataset_images

    rows = []
    out["images"].mkdir(parents=True, exist_ok=True)
    for hub_split, split in split_names.items():
        if hub_split not in loaded:
            continue
        part = loaded[hub_split]
        images = _dataset_images(part, None, f"split {hub_split!r}")
        labels = None
        if label is not None:
            if label not in part.column_names:
                raise DataError(f"split {hub_split!r} has no column {label!r}: {part.column_names}")
            feature = part.features[label]
            raw = part[label]
            labels = [feature.int2str(v) if hasattr(feature, "int2str") else str(v) for v in raw]
        for index, image in enumerate(images):
            name = f"{hub_split}-{index:06d}.png"
            folder = out["images"] if labels is None else out["images"] / labels[index]
            folder.mkdir(parents=True, exist_ok=True)
            image.convert("RGB").save(folder / name)
            if labels is None:
                rows.append({"path": name, "label": "face", "split": split})
            else:
                rows.append({"name": name, "label": labels[index], "split": split})
    if not rows:
        raise DataError(f"the hub dataset has none of the splits {sorted(split_names)}")
    columns = ["path", "label", "split"] if label is None else ["name", "label", "split"]
    _write_csv(out["csv"], columns, rows)
