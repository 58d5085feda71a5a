# ruff: noqa: F821  (`snakemake` is injected by Snakemake's script: directive)
import json
import sys

import h5py
import numpy as np

sys.stderr = open(snakemake.log[0], "w")
ws = []
for path in snakemake.input:
    with h5py.File(path, "r") as f:
        ws.append(f["w"][:])
ws = np.stack(ws)
with h5py.File(snakemake.output.scores, "w") as f:
    f["weights"] = ws
    f.create_group("stats")["mean"] = ws.mean(axis=0)
with open(snakemake.output.summary, "w") as fh:
    json.dump(
        {"num_subsets": len(ws), "norms": [float(np.linalg.norm(w)) for w in ws]}, fh, indent=1
    )
with open(snakemake.output.table, "w") as fh:
    fh.write("subset,norm\n")
    for k, w in enumerate(ws):
        fh.write(f"{k},{np.linalg.norm(w):.10g}\n")
