# The README's commands. On a fresh machine `make test` and `make quickstart` are all the set-up.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
QUICKSTART_DIR ?= runs/quickstart

.PHONY: install test test-cluster lint quickstart benchmark clean

# Re-install when the package metadata changes; the stamp makes repeated runs instant.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

install: $(VENV)/.installed

test: $(VENV)/.installed
	RAY_DATA_DISABLE_PROGRESS_BARS=1 $(BIN)/python -m pytest -q -p no:cacheprovider --durations=15 tests

# Only the fault drill against a real local Ray cluster and MLflow server (part of `make
# test`), printing what it observed.
test-cluster: $(VENV)/.installed
	RAY_DATA_DISABLE_PROGRESS_BARS=1 $(BIN)/python -m pytest -q -p no:cacheprovider -m cluster -s tests/cluster

lint: $(VENV)/.installed
	$(BIN)/ruff check selfpose3d pipelines tune cluster tests benchmarks

# The cpu preset's dataset, every second frame (adjacent frames are near-duplicates; scoring
# the 350 test frames is the slowest step after training), and a shorter budget: 125 steps an
# epoch, root 250 (fewer leave the proposals' quality to chance: 29-60 mm root MPJPE over
# runs at 125), pose 250 (L1 in its second epoch), finetune 125 (~9 min of training on 2 cores).
QUICKSTART_DATA ?= --set data.frame_interval=2 --set data.test_frame_interval=2
QUICKSTART_BUDGET ?= --set train.max_steps_per_epoch=125 --set train.root.epochs=2 \
	--set train.pose.epochs=2 --set train.pose.lr_steps=[] --set train.l1_from_epoch=1 \
	--set train.finetune.epochs=1 --set train.eval_max_frames=25

quickstart: $(VENV)/.installed
	$(BIN)/selfpose3d synth --config configs/cpu.yaml --out $(QUICKSTART_DIR)/synthetic
	test -f $(QUICKSTART_DIR)/parquet/summary.json || $(BIN)/selfpose3d ingest \
		$(QUICKSTART_DIR)/synthetic --config configs/cpu.yaml --out $(QUICKSTART_DIR)/parquet \
		$(QUICKSTART_DATA)
	$(BIN)/selfpose3d train --config configs/cpu.yaml $(QUICKSTART_BUDGET) \
		--data $(QUICKSTART_DIR)/parquet --out $(QUICKSTART_DIR)/run --cpus-per-worker 2 \
		--tracking-uri sqlite:///$(abspath $(QUICKSTART_DIR))/mlflow.db \
		$(if $(wildcard $(QUICKSTART_DIR)/run/ray_train),--resume,)

benchmark: $(VENV)/.installed
	$(BIN)/python benchmarks/accuracy.py --config configs/cpu.yaml --out runs/benchmark

clean:
	rm -rf $(QUICKSTART_DIR)
