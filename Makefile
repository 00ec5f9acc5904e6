# The README's commands. On a fresh machine `make test` and `make quickstart` are all the set-up.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
QUICKSTART_DIR ?= runs/quickstart

.PHONY: install test lint quickstart benchmark clean

# Re-install when the package metadata changes; the stamp makes repeated runs instant.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

install: $(VENV)/.installed

test: $(VENV)/.installed
	RAY_DATA_DISABLE_PROGRESS_BARS=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests

lint: $(VENV)/.installed
	$(BIN)/ruff check selfpose3d pipelines tests benchmarks

quickstart: $(VENV)/.installed
	$(BIN)/selfpose3d synth --config configs/cpu.yaml --set synth.frames_per_sequence=40 \
		--out $(QUICKSTART_DIR)/synthetic
	$(BIN)/selfpose3d ingest $(QUICKSTART_DIR)/synthetic --config configs/cpu.yaml \
		--out $(QUICKSTART_DIR)/parquet

benchmark: $(VENV)/.installed
	$(BIN)/python benchmarks/data_pipeline.py --config configs/cpu.yaml

clean:
	rm -rf $(QUICKSTART_DIR)
