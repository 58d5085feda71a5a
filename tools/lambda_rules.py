"""Shortfall against the oracle of three rules for the gen split's λ, recomputed from finished
runs' LDS records (``lds/{method}/K{K}/{val,gen}.json``: ``heldout_curve``, ``lds_curve``);
no models, scores or features are read.

* ``own``: each split's λ is the best of its own held-out curve (``lds.gen_lambda: own``);
* ``val``: gen takes val's held-out λ (``lds.gen_lambda: val``, the default);
* ``sum``: both take the λ that maximises the sum of the two held-out curves.

Usage: ``python tools/lambda_rules.py RESULTS_DIR [RESULTS_DIR ...]`` (e.g. results/digits-demo);
prints a Markdown table, LDS points below each split's oracle (ties go to the smallest λ).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def best(curve: np.ndarray, grid: list[float]) -> int:
    valid = ~np.isnan(curve)
    candidates = np.nonzero(valid & (curve == np.max(curve[valid])))[0]
    return int(candidates[np.argmin(np.asarray(grid)[candidates])])


def shortfalls(val: dict, gen: dict) -> list[float]:
    grid = val["lambdas"]
    held_val, held_gen = (np.asarray(r["heldout_curve"], float) for r in (val, gen))
    bench_val, bench_gen = (np.asarray(r["lds_curve"], float) for r in (val, gen))
    own_val, own_gen = best(held_val, grid), best(held_gen, grid)
    summed = best(held_val + held_gen, grid)
    top_val, top_gen = np.nanmax(bench_val), np.nanmax(bench_gen)
    return [
        100 * (top_val - bench_val[own_val]),
        100 * (top_gen - bench_gen[own_gen]),
        100 * (top_gen - bench_gen[own_val]),
        100 * (top_val - bench_val[summed]),
        100 * (top_gen - bench_gen[summed]),
    ]


def main(results_dirs: list[str]) -> None:
    rows = []
    for results in results_dirs:
        for val_path in sorted(Path(results, "lds").glob("*/K*/val.json")):
            gen_path = val_path.with_name("gen.json")
            if not gen_path.exists():
                continue
            val, gen = json.loads(val_path.read_text()), json.loads(gen_path.read_text())
            if val["lambdas"] != gen["lambdas"] or len(val["lambdas"]) < 2:
                continue  # no λ to choose
            label = (Path(results).name, val_path.parts[-3], val_path.parts[-2])
            rows.append((label, shortfalls(val, gen)))
    print("| run | method | K | own: val | own: gen | val's λ: gen | summed: val | summed: gen |")
    print("|---|---|---|---|---|---|---|---|")
    for label, values in rows:
        print("| " + " | ".join(label) + " | " + " | ".join(f"{v:.1f}" for v in values) + " |")
    table = np.array([values for _, values in rows])
    for name, reduce in (("mean", np.mean), ("max", np.max)):
        cells = " | ".join(f"{v:.1f}" for v in reduce(table, axis=0))
        print(f"| **{name} ({len(rows)} cases)** | | | {cells} |")


if __name__ == "__main__":
    main(sys.argv[1:])
