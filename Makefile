PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
PUSHTUNE_DATA ?= $(abspath ../shared/data/att_faces)
export PUSHTUNE_DATA

.PHONY: install test run bench clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

test: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -q -rs $(PYTEST_ARGS)

run: install
	$(BIN)/python scripts/run_examples.py

bench: install
	$(BIN)/pip install --quiet -r requirements-bench.txt
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) .pushtune .pytest_cache .mypy_cache .ruff_cache
