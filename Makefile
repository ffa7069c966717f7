# ben_builder: every target runs in the project's own virtual environment (created on demand).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# configilm 0.7.1 pins numpy<2 and pyarrow<13: it gets a small environment of its own, which
# takes torch, torchvision and lightning from $(VENV) through a .pth line (tests/test_loaders.py)
CONFIGILM_VENV ?= .venv-configilm
CONFIGILM_STAMP := $(CONFIGILM_VENV)/.installed-stamp
DEMO ?= demo

.PHONY: venv configilm-env demo archive train test slurm-up slurm-down lint typecheck check bench bench-patch bench-label bench-build bench-download bench-train bench-loaders bench-encode bench-sources clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,train,compat]'
	touch $(STAMP)

venv: $(STAMP)

## configilm-env: configilm 0.7.1 in its own environment, for the loader compatibility test
configilm-env: $(CONFIGILM_STAMP)

$(CONFIGILM_STAMP): $(STAMP)
	$(PYTHON) -m venv $(CONFIGILM_VENV)
	$(BIN)/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" \
		> "$$($(CONFIGILM_VENV)/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/ben-builder-dev.pth"
	$(CONFIGILM_VENV)/bin/python -m pip install --quiet 'configilm==0.7.1' 'lmdb>=1.4,<2' \
		'pyarrow>=12.0.1,<13' 'pandas>=2.1,<2.3'
	touch $(CONFIGILM_STAMP)

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
test: $(STAMP) $(CONFIGILM_STAMP)
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
bench: bench-patch bench-label bench-build bench-download bench-train bench-loaders bench-encode bench-sources

bench-patch: $(STAMP)
	$(BIN)/python benchmarks/bench_patch.py --out benchmarks/results/patch.json

clean:
	rm -rf $(DEMO) $(CONFIGILM_VENV) .pytest_cache .mypy_cache .ruff_cache

bench-label: $(STAMP)
	$(BIN)/python benchmarks/bench_label.py --out benchmarks/results/label.json

bench-build: $(STAMP)
	$(BIN)/python benchmarks/bench_build.py --out benchmarks/results/build.json

bench-download: $(STAMP)
	$(BIN)/python benchmarks/bench_download.py --out benchmarks/results/download.json

bench-train: $(STAMP)
	@test -f $(DEMO)/encoded/metadata.parquet || $(MAKE) train
	$(BIN)/python benchmarks/bench_train.py --out benchmarks/results/train.json

bench-loaders: $(STAMP) $(CONFIGILM_STAMP)
	@test -f $(DEMO)/encoded/metadata.parquet || $(MAKE) train
	$(BIN)/python benchmarks/bench_loaders.py --archive $(DEMO)/archive --encoded $(DEMO)/encoded --out benchmarks/results/loaders.json

bench-sources: $(STAMP)
	$(BIN)/python benchmarks/bench_sources.py --work-dir /dev/shm --out benchmarks/results/sources.json

bench-encode: $(STAMP)
	@test -f $(DEMO)/archive/metadata.parquet || $(BIN)/ben-builder build pipelines/demo.yaml
	$(BIN)/python benchmarks/bench_encode.py --archive $(DEMO)/archive --out benchmarks/results/encode.json
