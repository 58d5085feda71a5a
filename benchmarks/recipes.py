"""Which training recipe makes the demo's main model good enough to attribute?

Trains the main model alone (the whole train split of the default config) under a few recipes,
generates --samples gen samples (DDIM, 50 steps, at each --eta) and scores them with the sample-quality
classifier (diffattr.sample_quality). Prints CPU seconds of training and the fraction of samples
recognised (probability >= 0.8) beside the real val images' fraction.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/recipes.py \
        --dataset results/digits-demo/data/dataset.h5 --recipes base c2 c9

Each recipe is the round-2 default (ROUND2) with a few changes; the demo (config.yaml) runs c9.
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
ATTENTION = {
    "block_out_channels": [16, 32],
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
    "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
}
NO_ATTENTION = {
    "down_block_types": ["DownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "UpBlock2D"],
}
WIDE = {"block_out_channels": [32, 64], "norm_num_groups": 16}
LINEAR = {"num_train_timesteps": 1000, "beta_schedule": "linear", "clip_sample": True}
COSINE = {**LINEAR, "beta_schedule": "squaredcos_cap_v2"}
# The round-2 default, which every recipe below changes: 50 epochs at batch 64, lr 1e-3,
# dropout 0.1, attention at 4x4, the linear schedule (the paper's), no flips.
ROUND2 = {
    "training": {"epochs": 50, "batch_size": 64, "lr": 0.001, "random_flip": False},
    "unet": ATTENTION,
    "dropout": 0.1,
    "scheduler": LINEAR,
}
FAST = {"lr": 0.003}
C = {"dropout": 0.0, "scheduler": COSINE}  # shared by the c recipes; c9 is config.yaml's
# name: changes to ROUND2 (training and unet keys merge into ROUND2's)
RECIPES = {
    "A": {"training": {"epochs": 40, "random_flip": True}},  # the round-1 default
    "base": {},
    "C": {"training": {"epochs": 100}},
    "D": {"training": {"epochs": 100}, "unet": WIDE},
    "H": {"training": {"epochs": 100, "ema_decay": 0.995}},
    "dropout0": {"dropout": 0.0},
    "lr2e-3": {"training": {"lr": 0.002}},
    "lr3e-3": {"training": FAST},
    "cosine": {"scheduler": COSINE},
    "batch128": {"training": {"epochs": 100, "batch_size": 128}},
    "ema0.99": {"training": {"ema_decay": 0.99}},
    "noclip": {"training": {"max_grad_norm": 0.0}},
    "noattn": {"unet": NO_ATTENTION},
    "wide": {"unet": WIDE},
    "c1": {"training": FAST, **C},
    "c2": {"training": FAST, "unet": NO_ATTENTION, **C},
    "c3": {"training": FAST, "unet": {**NO_ATTENTION, **WIDE}, **C},
    "c4": {"training": {**FAST, "epochs": 100, "batch_size": 128}, **C},
    "c5": {"training": {"lr": 0.005}, **C},
    "c6": {"training": {**FAST, "ema_decay": 0.995}, **C},
    "c7": {"training": FAST, "unet": {**NO_ATTENTION, "layers_per_block": 2}, **C},
    "c8": {"training": {**FAST, "epochs": 100}, "unet": NO_ATTENTION, **C},
    "c9": {"unet": NO_ATTENTION, **C},  # c2 at the round-2 lr (1e-3)
    "c10": {"training": {"lr": 0.002}, "unet": NO_ATTENTION, **C},
}


def recipe(name: str) -> dict:
    """ROUND2 with the named recipe's changes."""
    changes = RECIPES[name]
    return {
        "training": {**ROUND2["training"], **changes.get("training", {})},
        "unet": {**ROUND2["unet"], **changes.get("unet", {})},
        "dropout": changes.get("dropout", ROUND2["dropout"]),
        "scheduler": changes.get("scheduler", ROUND2["scheduler"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipes", nargs="+", default=sorted(RECIPES))
    parser.add_argument("--dataset", required=True, help="data/dataset.h5 of the default config")
    parser.add_argument("--samples", type=int, default=300, help="generated images per recipe")
    parser.add_argument("--eta", type=float, nargs="+", default=[0.0, 1.0], help="DDIM η values")
    parser.add_argument("--save", help="folder for each recipe's samples (.npy) and sheet (.png)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    train = data.load_split(args.dataset, "train")
    val = data.load_split(args.dataset, "val")
    for name in args.recipes:
        chosen = recipe(name)
        settings = TrainingSettings.from_dict(
            chosen["training"], device="cpu", seed=42, checkpoint_every=0
        )  # no resume checkpoints in the timing
        unet_cfg = {**config["model"]["unet"], **chosen["unet"]}
        with tempfile.TemporaryDirectory() as tmp:
            cpu = time.process_time()
            stats = train_model(
                train.images,
                settings,
                unet_cfg,
                chosen["scheduler"],
                TrainingRun(Path(tmp) / "m", Path(tmp) / "ck"),
                dropout=chosen["dropout"],
            )
            train_cpu = time.process_time() - cpu
            model = load_diffusion_model(Path(tmp) / "m")
            params = sum(p.numel() for p in model.denoiser.parameters())
            recognised = {}
            for eta in args.eta:
                ddim = DdimSettings(steps=50, eta=eta)
                images = generate(model, sample_seeds(args.samples, 0), ddim)["images"]
                record = quality_record(train.images, train.labels, val.images, val.labels, images)
                recognised[f"eta{eta:g}"] = record["gen"]["recognised_fraction"]
                if args.save:
                    Path(args.save).mkdir(parents=True, exist_ok=True)
                    stem = Path(args.save) / f"{name}-eta{eta:g}"
                    np.save(stem.with_suffix(".npy"), images)
                    save_png(str(stem.with_suffix(".png")), sample_sheet(images), scale=1)
        row = {
            "recipe": name,
            "changes": RECIPES[name],
            "params": params,
            "steps": stats.get("steps"),
            "final_loss": round(float(stats.get("final_loss", np.nan)), 4),
            "train_cpu_s": round(train_cpu, 1),
            "gen_recognised": recognised,
            "val_recognised": record["val"]["recognised_fraction"],
            "gen_median_nearest": round(record["gen"]["median_nearest_distance"], 4),
            "gen_classes": np.bincount(record["gen"]["labels"], minlength=10).tolist(),
        }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
