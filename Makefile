# ben_builder: every target runs in the project's own virtual environment (created on demand).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO ?= demo
CLC_FILE := U2018_CLC2018_V2020_20u1.gpkg

.PHONY: venv demo test lint typecheck check bench bench-patch clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

## demo: synthetic products (no network) -> labelled, screened BigEarthNet-layout archive in demo/
demo: $(STAMP)
	$(BIN)/ben-builder synth --out $(DEMO)/inputs
	$(BIN)/ben-builder process $(DEMO)/inputs/products/* --clc $(DEMO)/inputs/clc/$(CLC_FILE) --out $(DEMO)/archive

## test: the whole test suite (what CI runs)
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q

lint: $(STAMP)
	$(BIN)/ruff check ben_builder tests benchmarks
	$(BIN)/ruff format --check ben_builder tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

## bench: all benchmarks; results land in benchmarks/results/
bench: bench-patch

bench-patch: $(STAMP)
	$(BIN)/python benchmarks/bench_patch.py --out benchmarks/results/patch.json

clean:
	rm -rf $(DEMO) .pytest_cache .mypy_cache .ruff_cache
