"""Jobs of ``rules/data.smk``: the dataset file and the LDS training subsets."""

from __future__ import annotations

from typing import Any

from diffattr import data, store
from diffattr.progress import status
from diffattr.settings import SubsetSettings


def prepare_data(out_path: str, *, data_cfg: dict[str, Any]) -> None:
    data.prepare_dataset(data_cfg, out_path)
    attrs = store.read_attrs(out_path)
    status("%s train rows, %s val rows", attrs.get("n_train"), attrs.get("n_val"))


def draw_subset(dataset_path: str, out_path: str, *, settings: SubsetSettings) -> None:
    """Subset ``settings.k`` of pool ``settings.pool``: positions into the train split."""
    s = settings
    train = data.load_split(dataset_path, "train")
    positions = data.draw_subset(train.labels, s.alpha, s.pool_seed, s.k, s.stratify)
    data.write_subset(
        out_path,
        positions,
        {
            "pool": s.pool,
            "k": s.k,
            "alpha": s.alpha,
            "pool_seed": s.pool_seed,
            "n_train": len(train),
        },
    )
