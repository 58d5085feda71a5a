# ruff: noqa: F821  (`snakemake` is injected by Snakemake's script: directive)
import os
import socket
import sys

import h5py
import toypkg
from toypkg import fit_subset

sys.stderr = open(snakemake.log[0], "w")
print(
    f"host={socket.gethostname()} job={os.environ.get('SLURM_JOB_ID')} "
    f"threads={snakemake.threads} gpu={snakemake.resources.get('gpu', 0)} "
    f"toypkg={toypkg.__file__} PYTHONPATH={os.environ.get('PYTHONPATH')}",
    file=sys.stderr,
)
if snakemake.params.fail:  # failure injection for the harness's own tests
    raise SystemExit(f"injected failure for subset {snakemake.wildcards.k}")
with h5py.File(snakemake.input[0], "r") as f:
    x, y = f["x"][:], f["y"][:]
w, idx = fit_subset(x, y, snakemake.params.seed)
with h5py.File(snakemake.output[0], "w") as f:
    f["w"] = w
    f["idx"] = idx
