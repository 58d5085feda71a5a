"""Which training recipe makes the demo's main model good enough to attribute?

Trains the main model alone (the whole train split of the default config) under a few recipes,
generates the default's gen samples (DDIM, 50 steps) and scores them with the sample-quality
classifier (diffattr.sample_quality). Prints CPU seconds of training and the fraction of samples
recognised (probability >= 0.8) beside the real val images' fraction.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/recipes.py --recipes A B C
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from diffattr import data
from diffattr.images import save_png
from diffattr.models import load_diffusion_model
from diffattr.sample_quality import quality_record, sample_sheet
from diffattr.sampling import DdimSettings, generate, sample_seeds
from diffattr.training import TrainingRun, TrainingSettings, train_model

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"block_out_channels": [16, 32]}
WIDE = {"block_out_channels": [32, 64], "norm_num_groups": 16}
# name: (training overrides, unet overrides)
RECIPES = {
    "A": ({"epochs": 40}, SMALL),  # the old default
    "B": ({"epochs": 40, "random_flip": False}, SMALL),
    "C": ({"epochs": 100, "random_flip": False}, SMALL),
    "D": ({"epochs": 100, "random_flip": False}, WIDE),
    "E": ({"epochs": 200, "random_flip": False}, SMALL),
    "F": ({"epochs": 100, "random_flip": False, "lr": 0.002}, SMALL),
    "G": ({"epochs": 60, "random_flip": False}, WIDE),
    "H": ({"epochs": 100, "random_flip": False, "ema_decay": 0.995}, SMALL),
    "I": ({"epochs": 200, "random_flip": False, "ema_decay": 0.995}, SMALL),
    "J": ({"epochs": 100, "random_flip": False, "ema_decay": 0.995, "lr": 0.002}, SMALL),
    "K": ({"epochs": 60, "random_flip": False, "ema_decay": 0.99}, SMALL),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipes", nargs="+", default=sorted(RECIPES))
    parser.add_argument("--dataset", required=True, help="data/dataset.h5 of the default config")
    parser.add_argument("--save", help="folder for each recipe's samples (.npy) and sheet (.png)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    schema_scheduler = {"num_train_timesteps": 1000, "beta_schedule": "linear", "clip_sample": True}
    train = data.load_split(args.dataset, "train")
    val = data.load_split(args.dataset, "val")
    for name in args.recipes:
        training, unet = RECIPES[name]
        unet_cfg = {**config["model"]["unet"], **unet}
        base = {k: v for k, v in config["training"].items() if k != "checkpoint_every"}
        settings = TrainingSettings.from_dict(
            {**base, **training}, device="cpu", seed=42, checkpoint_every=0
        )  # no resume checkpoints in the timing
        with tempfile.TemporaryDirectory() as tmp:
            cpu = time.process_time()
            stats = train_model(
                train.images,
                settings,
                unet_cfg,
                schema_scheduler,
                TrainingRun(Path(tmp) / "m", Path(tmp) / "ck"),
                dropout=config["model"]["dropout"],
            )
            train_cpu = time.process_time() - cpu
            model = load_diffusion_model(Path(tmp) / "m")
            params = sum(p.numel() for p in model.denoiser.parameters())
            cpu = time.process_time()
            images = generate(model, sample_seeds(100, 0), DdimSettings(steps=50))["images"]
            gen_cpu = time.process_time() - cpu
        if args.save:
            Path(args.save).mkdir(parents=True, exist_ok=True)
            np.save(Path(args.save) / f"{name}.npy", images)
            save_png(str(Path(args.save) / f"{name}.png"), sample_sheet(images), scale=1)
        record = quality_record(train.images, train.labels, val.images, val.labels, images)
        row = {
            "recipe": name,
            "training": training,
            "unet": unet,
            "params": params,
            "steps": stats.get("steps"),
            "final_loss": round(float(stats.get("final_loss", np.nan)), 4),
            "train_cpu_s": round(train_cpu, 1),
            "gen_cpu_s": round(gen_cpu, 1),
            "gen_recognised": record["gen"]["recognised_fraction"],
            "val_recognised": record["val"]["recognised_fraction"],
            "gen_median_nearest": round(record["gen"]["median_nearest_distance"], 4),
            "val_median_nearest": round(record["val"]["median_nearest_distance"], 4),
            "gen_classes": np.bincount(record["gen"]["labels"], minlength=10).tolist(),
        }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
