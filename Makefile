# The two commands a newcomer needs: `make demo` and `make test`. Each sets itself up.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-faults test-image image lint bench venv clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,broker,ros]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/muto demo

# Two workers: the suite mostly waits on servers, agents and brokers (load ~1 on 2 cores
# when serial). Plain `load` scheduling: `loadgroup` keys tests by node id and ran one of
# schemathesis' 30 same-named cases.
WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(WORKERS) -m "not faults and not image" tests

test-faults: $(STAMP)
	MUTO_FAULT_RUNS=full $(BIN)/python -m pytest -q -m faults tests

# The control plane's image (deploy/Containerfile). BASE=<image> builds on that image;
# unset, on a Debian base made with mmdebstrap (docs/deploy.md).
IMAGE ?= localhost/muto-cloud:latest
image:
	BASE='$(BASE)' deploy/build-image.sh $(IMAGE)

# Builds the image (minutes the first time; the base and layers are cached) and runs it.
test-image: $(STAMP)
	$(BIN)/python -m pytest -q -m image tests

lint: $(STAMP)
	$(BIN)/ruff check muto tests bench
	$(BIN)/ruff format --check muto tests bench
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
