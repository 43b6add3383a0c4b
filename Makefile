# rsssl: every target sets itself up first (make install), so `make demo` and `make test` work from a clean clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The torch build this platform serves; override e.g. TORCH_PKGS="torch torchvision" for your own CUDA build.
TORCH_PKGS ?= torch==2.14.1 torchvision==0.29.1
RSSSL_DATA_DIR ?= $(abspath ../shared/data)
export RSSSL_DATA_DIR
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: install test test-gpu demo lint format clean bench slow

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch, torchvision" 2>/dev/null || $(BIN)/pip install $(TORCH_PKGS)
	$(BIN)/pip install -e ".[dev]"
	touch $@

# pytest exits 5 when it collected no test: say so, and fail like any other failure.
test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; fi; exit $$rc

# Checks that need a CUDA device (run them on a GPU machine).
test-gpu: install
	$(BIN)/python -m pytest -m gpu $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

demo: install
	$(BIN)/python -m rsssl.cli.demo

# Speed as ratios measured in one run: experiments/benchmarks/BENCHMARKS.md (+ benchmarks.json).
bench: install
	$(BIN)/rsssl-bench $(BENCH_ARGS)

# The long checks kept out of `make test` (memory, the soak, sampler speed).
slow: install
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

clean:
	rm -rf runs multirun outputs .pytest_cache .ruff_cache
