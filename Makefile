# diffattr: `make run` runs the embedded default (CPU demo), `make test` runs the tests.
# Both create the virtual environment .venv on first use (torch pinned to a CPU build).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
CORES ?= 2
SNAKEMAKE := $(BIN)/snakemake
TORCH_PIN ?= torch==2.13.0

.PHONY: setup run test test-fast test-slurm lint format report bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_PIN)"
	$(BIN)/python -m pip install --quiet -e ".[workflow,hub,dev]" "$(TORCH_PIN)"
	touch $(STAMP)

run: setup
	$(SNAKEMAKE) --cores $(CORES) $(ARGS)

test: setup
	$(BIN)/python -m pytest -q $(ARGS)

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow" $(ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check src tests scripts benchmarks
	$(BIN)/snakefmt --check Snakefile rules
	$(SNAKEMAKE) --lint

format: setup
	$(BIN)/ruff format src tests scripts benchmarks
	$(BIN)/snakefmt Snakefile rules

clean:
	rm -rf results logs benchmarks/digits-demo .checkpoints .snakemake
