# Two entry points: `make demo` (the main job end to end on real data) and `make test`.
# Both create .venv on first use with torch/torchvision pinned (constraints.txt); `make test` also builds
# .venv-labelstudio, Label Studio in its own environment (its pins clash with ours), for the ML backend's
# end-to-end test (tests/serve/test_label_studio_e2e.py; the version is pinned in requirements/labelstudio.txt).
PYTHON ?= python3
VENV ?= .venv
LSVENV ?= .venv-labelstudio
DATASETS ?= ../shared/datasets
BIN = $(VENV)/bin

.PHONY: demo test lint bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev,bench]"
	touch $@

$(LSVENV)/.installed: requirements/labelstudio.txt
	$(PYTHON) -m venv $(LSVENV)
	$(LSVENV)/bin/python -m pip install -q --upgrade pip
	$(LSVENV)/bin/python -m pip install -q -r requirements/labelstudio.txt
	touch $@

demo: $(VENV)/.installed
	PATH="$(abspath $(BIN)):$$PATH" bash scripts/demo.sh "$(DATASETS)/isbi2012_em_membrane" runs/demo

test: $(VENV)/.installed $(LSVENV)/.installed
	UNETKIT_LABEL_STUDIO_BIN="$(abspath $(LSVENV))/bin/label-studio" $(BIN)/python -m pytest -q -m "not slow" -p no:cacheprovider

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy src

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/bench_forward.py --quick

clean:
	rm -rf runs/demo
