"""Peak memory of the EK-FAC factor job (kronfluence) at the demo and at the CIFAR-2 UNet size.

Random weights, the UNet built from an experiment config's ``model.unet`` block, B random
images, one timestep each, one factor fit (covariances, eigendecomposition, EK-FAC
eigenvalue correction: what ``fit_ekfac_factors`` runs per batch). Runs in a fresh process
per size so each peak RSS (``ru_maxrss``) is that size's own.

    .venv/bin/python benchmarks/ekfac_memory.py config.yaml experiments/cifar2.yaml
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(config_path: str, batch: int) -> dict:
    import numpy as np
    import torch
    import yaml

    from diffattr import ekfac
    from diffattr.features import num_trainable_parameters
    from diffattr.models import build_scheduler, build_unet

    torch.set_num_threads(1)
    config = yaml.safe_load(Path(config_path).read_text())
    torch.manual_seed(0)
    unet = build_unet(config["model"]["unet"]).eval()
    scheduler = build_scheduler(config.get("scheduler") or {})
    parameters = num_trainable_parameters(unet)  # before kronfluence freezes them
    size, channels = unet.config.sample_size, unet.config.in_channels
    x0 = torch.randn(batch, channels, size, size)
    data = ekfac.SampleDataset(x0, np.arange(batch), timesteps=[500])
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        loss = ekfac.DiffusionLoss(scheduler, noise_seed=0, batch_size=batch)
        provenance = ekfac.fit_factors(unet, loss, data, Path(tmp) / "f", "ekfac")
        factor_bytes = sum(p.stat().st_size for p in (Path(tmp) / "f").glob("*"))
    return {
        "config": config_path,
        "parameters": parameters,
        "covered_parameters": provenance["covered_parameters"],
        "uncovered_parameters": provenance["uncovered_parameters"],
        "tracked_modules": len(provenance["tracked_modules"]),
        "examples": batch,
        "peak_rss_mb": round(ekfac.peak_rss_mb(), 1),
        "factor_file_mb": round(factor_bytes / 2**20, 1),
        "seconds": round(time.perf_counter() - start, 1),
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--one":
        print(json.dumps(measure(sys.argv[2], int(sys.argv[3]))))
        return
    configs = sys.argv[1:] or ["config.yaml", "experiments/cifar2.yaml"]
    for config in configs:
        out = subprocess.run(
            [sys.executable, __file__, "--one", config, "4"],
            check=True,
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        print(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
