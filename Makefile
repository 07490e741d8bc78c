# Two commands on a fresh machine (Python 3.11 + pip): `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint typecheck check bench clean

$(STAMP): pyproject.toml partners/kit/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The partner kit first (its own distribution, in this repo): the hub depends on it, and
	# pip must find it installed rather than look for it on a package index.
	$(BIN)/pip install --quiet -e "./partners/kit[pandas]"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/hub serve

lint: $(STAMP)
	$(BIN)/ruff check hub partners matching tests bench
	$(BIN)/ruff format --check hub partners matching tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest -n 2 -q

bench: $(STAMP)
	$(BIN)/python bench/auth_layer.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
