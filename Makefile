# Two entry points: `make demo` (the main job) and `make test` (every CI gate).
# Both create .venv on first use: torch==2.13.0 first and alone, then the rest.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# This machine's pip configuration lists local indexes that do not exist; drop those warnings.
QUIET_PIP := sed -e '/is ignored: it is neither a file nor a directory/d'
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)

.PHONY: setup demo gates ui test lint typecheck unit examples benchmark datasets clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 is required"'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip 2>&1 | $(QUIET_PIP)
	$(PY) -m pip install --quiet torch==2.13.0 2>&1 | $(QUIET_PIP)
	$(PY) -m pip install --quiet -e '.[dev]' 2>&1 | $(QUIET_PIP)
	@rm -f $(VENV)/.installed-* && touch $@

# The whole lineage (data sets -> checkpoints -> gate reports -> released weights) on the
# embedded defaults under ./.worldflux: one family released, one blocked by a failing gate.
demo: setup
	$(PY) -m orchestration demo

# The reference gate sweep without Dagster (dreamerv3 + tdmpc2, 3 seeds, reports in ./reports).
gates: setup
	$(PY) scripts/demo_reference.py

ui: setup
	$(PY) -m orchestration ui

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

typecheck: setup
	$(VENV)/bin/mypy worldflux quality release assets orchestration

# Two pytest-xdist workers (the CI machine has two cores), one test file each at a time so that
# module fixtures (a trained sweep, a lineage run) are built once; one torch thread per worker.
unit: setup
	$(PY) -m pytest -q -n 2 --dist loadfile

examples: setup
	$(PY) examples/train_dreamer.py --test
	$(PY) examples/train_tdmpc2.py --test
	$(PY) examples/plan_cem.py --horizon 3 --action-dim 2
	$(PY) examples/train_jepa.py --steps 5 --batch-size 4 --obs-dim 8
	$(PY) examples/train_token_model.py --steps 5 --batch-size 4 --seq-len 8 --vocab-size 32
	$(PY) examples/train_diffusion_model.py --steps 5 --batch-size 4 --obs-dim 4 --action-dim 2

test: lint typecheck unit examples
	@echo "all CI gates passed"

benchmark: setup
	$(PY) scripts/benchmark_training.py

datasets: setup
	$(PY) scripts/generate_datasets.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .worldflux
