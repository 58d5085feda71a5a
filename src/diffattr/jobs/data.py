"""Jobs of ``rules/data.smk``: the dataset file and the LDS training subsets."""

from __future__ import annotations

from typing import Any

from diffattr import data, store
from diffattr.progress import status


def prepare_data(data_cfg: dict[str, Any], out_path: str) -> None:
    data.prepare_dataset(data_cfg, out_path)
    attrs = store.read_attrs(out_path)
    status("%s train rows, %s val rows", attrs.get("n_train"), attrs.get("n_val"))


def draw_subset(
    dataset_path: str,
    out_path: str,
    pool: str,
    k: int,
    alpha: float,
    pool_seed: int,
    stratify: bool,
) -> None:
    train = data.load_split(dataset_path, "train")
    positions = data.draw_subset(train.labels, alpha, pool_seed, k, stratify)
    data.write_subset(
        out_path,
        positions,
        {"pool": pool, "k": k, "alpha": alpha, "pool_seed": pool_seed, "n_train": len(train)},
    )
