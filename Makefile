# Two entry points: `make demo` (the main job) and `make test` (every CI gate).
# Both create .venv on first use: torch==2.13.0 first and alone, then the rest.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)

.PHONY: setup demo test lint typecheck unit examples benchmark datasets clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 is required"'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

demo: setup
	$(PY) scripts/demo_reference.py

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: setup
	$(VENV)/bin/mypy worldflux

unit: setup
	$(PY) -m pytest -q

examples: setup
	$(PY) examples/train_dreamer.py --test
	$(PY) examples/train_tdmpc2.py --test
	$(PY) examples/plan_cem.py --horizon 3 --action-dim 2

test: lint typecheck unit examples
	@echo "all CI gates passed"

benchmark: setup
	$(PY) scripts/benchmark_training.py

datasets: setup
	$(PY) scripts/generate_datasets.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
