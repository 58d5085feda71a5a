# ruff: noqa: F821  (`snakemake` is injected by Snakemake's script: directive)
import sys

import h5py
import numpy as np

sys.stderr = open(snakemake.log[0], "w")
rng = np.random.default_rng(snakemake.params.seed)
x = rng.normal(size=(snakemake.params.n, 8))
with h5py.File(snakemake.output[0], "w") as f:
    f["x"] = x
    f["y"] = x @ np.arange(8.0) + 0.1 * rng.normal(size=len(x))
