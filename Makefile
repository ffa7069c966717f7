# ben_builder: every target runs in the project's own virtual environment (created on demand).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO ?= demo

.PHONY: venv demo archive train test slurm-up slurm-down lint typecheck check bench bench-patch bench-label bench-build bench-download bench-train clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,train]'
	touch $(STAMP)

venv: $(STAMP)

## demo: synthetic products (no network) -> labelled, screened, split archive + report in demo/
demo: $(STAMP)
	$(BIN)/ben-builder build pipelines/demo.yaml

## archive: the chain for any run configuration: make archive CONFIG=pipelines/new-region.yaml
archive: $(STAMP)
	@test -n "$(CONFIG)" || { echo "usage: make archive CONFIG=pipelines/<run>.yaml"; exit 2; }
	$(BIN)/ben-builder build $(CONFIG)

## train: encode the demo archive and train/evaluate the multi-branch CNN on it (CPU)
train: $(STAMP)
	@test -f $(DEMO)/archive/metadata.parquet || $(BIN)/ben-builder build pipelines/demo.yaml
	$(BIN)/ben-builder encode $(DEMO)/archive --out $(DEMO)/encoded
	$(BIN)/ben-builder train pipelines/train-demo.yaml

## test: the whole test suite (what CI runs)
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q

## slurm-up / slurm-down: a single-node SLURM for the tests that need one (root; .ci/slurm)
slurm-up:
	.ci/slurm up

slurm-down:
	.ci/slurm down

lint: $(STAMP)
	$(BIN)/ruff check ben_builder tests benchmarks
	$(BIN)/ruff format --check ben_builder tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

## bench: all benchmarks; results land in benchmarks/results/
bench: bench-patch bench-label bench-build bench-download bench-train

bench-patch: $(STAMP)
	$(BIN)/python benchmarks/bench_patch.py --out benchmarks/results/patch.json

clean:
	rm -rf $(DEMO) .pytest_cache .mypy_cache .ruff_cache

bench-label: $(STAMP)
	$(BIN)/python benchmarks/bench_label.py --out benchmarks/results/label.json

bench-build: $(STAMP)
	$(BIN)/python benchmarks/bench_build.py --out benchmarks/results/build.json

bench-download: $(STAMP)
	$(BIN)/python benchmarks/bench_download.py --out benchmarks/results/download.json

bench-train: $(STAMP)
	@test -f $(DEMO)/encoded/metadata.parquet || $(MAKE) train
	$(BIN)/python benchmarks/bench_train.py --out benchmarks/results/train.json
