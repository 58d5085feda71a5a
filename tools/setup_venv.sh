#!/usr/bin/env bash
# Creates the virtual environment that `make run` and `make test` use (called by `make setup`).
#
#   tools/setup_venv.sh PYTHON VENV TORCH_PIN KRONFLUENCE_PIN
#
# It installs with uv (from PyPI into the new venv) because uv resolves and installs this
# project's ~120 packages in about 40 s on a cold cache where pip takes about 125 s (two cores;
# docs/demo.md). uv does not read pip's configuration, so the find-links, extra indexes and
# constraints pip is configured with are passed on. If uv cannot be installed or fails, pip does
# the same installation. The pins and the kronfluence step are the same on both paths.
set -euo pipefail
python=$1 venv=$2 torch_pin=$3 kronfluence_pin=$4
extras=".[workflow,hub,dev,ekfac]"

test -x "$venv/bin/python" || "$python" -m venv "$venv"
py=$venv/bin/python

pip_config() { "$py" -m pip config get "global.$1" 2>/dev/null || true; }

install_with_uv() {
    "$py" -m pip install --quiet uv 2>/dev/null || return 1
    local args=(--python "$py" --quiet)
    local link url constraint
    for link in $(pip_config find-links); do args+=(--find-links "$link"); done
    for url in $(pip_config extra-index-url); do args+=(--extra-index-url "$url"); done
    for constraint in $(pip_config constraint); do
        [[ -f $constraint ]] && args+=(--constraint "$constraint")
    done
    # Several indexes may hold torch (PyPI's CUDA build, a local CPU build): take the pinned
    # version from whichever has it, as pip does.
    args+=(--index-strategy unsafe-best-match)
    "$venv/bin/uv" pip install "${args[@]}" "$torch_pin" -e "$extras" || return 1
    "$venv/bin/uv" pip install "${args[@]}" --no-deps "$kronfluence_pin" || return 1
}

install_with_pip() {
    "$py" -m pip install --quiet --upgrade pip
    "$py" -m pip install --quiet "$torch_pin"
    "$py" -m pip install --quiet -e "$extras" "$torch_pin"
    "$py" -m pip install --quiet --no-deps "$kronfluence_pin"
}

if ! install_with_uv; then
    echo "setup_venv: uv was not usable, installing with pip" >&2
    install_with_pip
fi

# kronfluence without its torchvision requirement; its wheel also ships a top-level `tests`
# package that would shadow this project's tests/, so that is removed (docs/methods.md).
"$py" -c "import kronfluence, pathlib, shutil; t = pathlib.Path(kronfluence.__file__).parents[1] / 'tests'; (t / 'test_analyzer.py').exists() and shutil.rmtree(t)"
"$py" -c "import torch; assert torch.__version__.startswith('${torch_pin#torch==}'), torch.__version__"
