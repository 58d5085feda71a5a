#!/usr/bin/env bash
# The feature (demo and paper size) and training benchmarks on a CUDA machine, in under 9 minutes.
#
#   benchmarks/gpu.sh                          # uses .venv/bin/python
#   PYTHON=/path/to/env/bin/python benchmarks/gpu.sh --quick
#
# The Python must have a CUDA build of torch (e.g. the envs/cuda.yaml conda environment, or a
# virtualenv with `pip install torch==2.13.0 -e .` from PyPI on Linux x86_64); the package is
# taken from src/ either way. Prints the card, then the usual benchmark lines; the report goes to
# benchmarks/latest-gpu.json. Extra arguments are passed to benchmarks/run.py.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"

if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi
"$PYTHON" - <<'EOF'
import sys

import torch

if not torch.cuda.is_available():
    sys.exit(
        f"torch {torch.__version__} sees no CUDA device; set PYTHON to an environment with a "
        "CUDA build of torch (see the header of benchmarks/gpu.sh)"
    )
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, card: {torch.cuda.get_device_name(0)}")
EOF

# The counter-based matrices must be the same on CPU and CUDA (docs/projection.md).
"$PYTHON" - <<'EOF'
from diffattr.counter_rng import counter_matrix, matrix_key

key = matrix_key(42, "gpu-check")
for kind in ("normal", "rademacher"):
    cpu = counter_matrix(key, 512, 4096, kind, "cpu")
    gpu = counter_matrix(key, 512, 4096, kind, "cuda").cpu()
    differ = int((cpu != gpu).sum())
    print(f"counter matrix {kind}: {differ} of {cpu.numel()} entries differ between CPU and CUDA")
EOF

# paper_features: the CIFAR-2 UNet at Z = 32768, K = 10, batch 8 (structured vs the reference).
exec timeout 540 "$PYTHON" benchmarks/run.py --device cuda --only features,paper_features,training \
    --threads "${THREADS:-4}" --out benchmarks/latest-gpu.json "$@"
