# Two set-up-free entry points: `make ask` and `make test`. Both create the virtual environment
# on first use (llama-cpp-python compiles llama.cpp once, ~8 minutes on two cores; pip caches the
# built wheel, so later environments install in seconds).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
QUESTION ?= Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether in April and May?

.PHONY: ask test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[embedded,hf,dev,bench,server]'
	touch $(STAMP)

ask: $(STAMP)
	$(BIN)/ponder ask "$(QUESTION)"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/engine_throughput.py

clean:
	rm -rf $(VENV) .ponder-home .mypy_cache .ruff_cache .pytest_cache
