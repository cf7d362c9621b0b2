# Two entry points: `make demo` (the main job end to end on real data) and `make test`.
# Both create .venv on first use with torch/torchvision pinned (constraints.txt).
PYTHON ?= python3
VENV ?= .venv
DATASETS ?= ../shared/datasets
BIN = $(VENV)/bin

.PHONY: demo test lint bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev,bench]"
	touch $@

demo: $(VENV)/.installed
	PATH="$(abspath $(BIN)):$$PATH" bash scripts/demo.sh "$(DATASETS)/isbi2012_em_membrane" runs/demo

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q -m "not slow" -p no:cacheprovider

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy src

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/bench_forward.py --quick

clean:
	rm -rf runs/demo
