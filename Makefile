# diffattr: `make run` runs the embedded default (CPU demo), `make test` runs the tests.
# Both create the virtual environment .venv on first use (torch pinned to a CPU build).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
CORES ?= 2
SNAKEMAKE := $(BIN)/snakemake
TORCH_PIN ?= torch==2.13.0
KRONFLUENCE_PIN ?= kronfluence==1.0.1
REPORT ?= report.html
# 1: one-thread jobs of `make run` fork from a process that has imported torch already
# (diffattr.job_server; same results, about 5 s less per torch job). 0 turns it off.
JOB_SERVER ?= 1

.PHONY: setup run test test-fast test-slurm test-slurm-toy lint format report bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml tools/setup_venv.sh
	tools/setup_venv.sh $(PYTHON) $(VENV) "$(TORCH_PIN)" "$(KRONFLUENCE_PIN)"
	touch $(STAMP)

# Greedy job selection: the default ILP scheduler costs the Snakemake process itself about a
# quarter of a core on this DAG (py-spy), for no gain without temp files to clean up early.
run: setup
	DIFFATTR_JOB_SERVER=$(JOB_SERVER) $(SNAKEMAKE) --cores $(CORES) --scheduler greedy $(ARGS)

# After `make run`: collect the figures and tables into one self-contained HTML file.
report: setup
	$(SNAKEMAKE) --cores $(CORES) --report $(REPORT) $(ARGS)

test: setup
	$(BIN)/python -m pytest -q $(ARGS)

bench: setup
	$(BIN)/python benchmarks/run.py $(ARGS)

# A real single-node SLURM (root, Debian: installs slurm-wlm + munge if missing) runs the tiny
# config through `snakemake --profile slurm` and compares the results with a local run.
SLURM_LIMIT ?= 3600
test-slurm: setup
	tests/slurm/run_slurm_test.sh --faults --limit $(SLURM_LIMIT) tests/config-tiny.yaml $(ARGS)

test-slurm-toy: setup
	tests/slurm/run_slurm_test.sh --toy $(ARGS)

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow" $(ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check src tests scripts benchmarks tools
	$(BIN)/snakefmt --check Snakefile rules/*.smk rules/functions/*.smk
	$(BIN)/python -m pytest -q tests/test_lint.py  # snakemake --lint: clean (exit 0, no warning)

format: setup
	$(BIN)/ruff format src tests scripts benchmarks tools
	$(BIN)/snakefmt Snakefile rules/*.smk rules/functions/*.smk

clean:
	rm -rf results logs .checkpoints .snakemake
