# onedge: `make run` runs the pipeline on the embedded default, `make test` runs the tests.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= configs/digits-one.yaml
OUT    ?= runs/digits-one
PYTEST_ARGS ?=

.PHONY: setup run train test lint format bench clean

$(BIN)/onedge: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(BIN)/onedge

setup: $(BIN)/onedge

run: setup
	$(BIN)/onedge run --config $(CONFIG) --out $(OUT)

train: setup
	$(BIN)/onedge train --config $(CONFIG) --out $(OUT)/training

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: setup
	$(BIN)/python -m bench.train_accuracy
	$(BIN)/python -m bench.export_latency

clean:
	rm -rf runs .pytest_cache .ruff_cache
