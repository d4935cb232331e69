# smp-assess: one command each. Every target sets up what it needs.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-stamp
export NO_ALBUMENTATIONS_UPDATE := 1
export MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK := true

.PHONY: setup demo test test-all lint bench clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch/torchvision from the package index, pinned by the lock
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev,bench,ray]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/python scripts/demo.py --out demo-out

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2

# ruff (pyflakes, pycodestyle, import order, bugbear, pyupgrade; the formatter's layout), mypy (pydantic plugin)
# and the import contract of the layers
lint: $(STAMP)
	$(BIN)/ruff check pipeline models data scripts tests
	$(BIN)/ruff format --check pipeline models data scripts tests
	$(BIN)/python -m mypy
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/test_layers.py

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 -m ''

bench: $(STAMP)
	$(BIN)/python scripts/bench.py --out bench-out
	$(BIN)/python scripts/bench_model.py --out bench-out
	$(BIN)/python scripts/bench_assess.py --out bench-out
	$(BIN)/python scripts/bench_compare.py --out bench-out --limit 9
	$(BIN)/python scripts/bench_fading.py --out bench-out
	$(BIN)/python scripts/bench_change.py --out bench-out
	$(BIN)/python scripts/bench_track.py --out bench-out --suite series
	$(BIN)/python scripts/bench_track.py --out bench-out --suite series_fading --limit 20
	$(BIN)/python scripts/bench_web.py --out bench-out
	$(BIN)/python scripts/bench_batch.py --out bench-out --n 32

clean:
	rm -rf demo-out bench-out .pytest_cache
