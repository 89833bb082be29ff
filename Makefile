# The two set-up commands: `make demo` and `make test`. Both install what they need into .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export DAGSTER_HOME ?= $(CURDIR)/.dagster
export CNG_DATA_DIR ?= $(CURDIR)/data

.PHONY: demo test ui validate bench lock clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)  ## build the demo source and materialize its whole asset graph into ./data
	$(BIN)/cng-assets demo --out $(CNG_DATA_DIR)

test: $(STAMP)  ## the test suite (what CI runs): Debian's chromium and postgresql installed when missing, both cores
	sh tests/system-packages.sh
	$(BIN)/pytest -n auto --maxprocesses 4

ui: $(STAMP)  ## the Dagster UI on http://127.0.0.1:3000, on the same instance and products as `make demo`
	mkdir -p $(DAGSTER_HOME)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dg dev

validate: $(STAMP)
	mkdir -p $(DAGSTER_HOME)
	$(BIN)/dagster definitions validate

bench: $(STAMP)  ## side-by-side benchmarks (prints ratios; not part of the tests)
	$(BIN)/python bench/geoparquet.py
	$(BIN)/python bench/hex.py
	$(BIN)/python bench/pmtiles.py
	$(BIN)/python bench/storage.py
	$(BIN)/python bench/raster_hex.py
	$(BIN)/python bench/chunk_balance.py

lock: $(STAMP)  ## requirements.lock for the image: exact versions and hashes of the runtime dependencies
	$(BIN)/pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --python-version 3.11 --python-platform x86_64-manylinux_2_28 --generate-hashes -o requirements.lock

clean:
	rm -rf data .dagster
