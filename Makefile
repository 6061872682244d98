# tierline — the two quick-start commands: `make serve` and `make test`.
# Each one sets everything up by itself (a virtualenv in .venv, the package, the
# embedded model's weights) and is safe to re-run.

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
PORT   ?= 8080
HOST   ?= 127.0.0.1
STAMP   = $(VENV)/.installed

.PHONY: serve test setup lint typecheck router-default router-eval router-speed perf clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# 1. install everything and run the gateway on the embedded model (no config, no keys)
serve: $(STAMP)
	$(BIN)/tierline models pull
	$(BIN)/tierline serve --host $(HOST) --port $(PORT) $(if $(CONFIG),--config $(CONFIG))

# 2. install everything and run the whole test suite (+ lint and strict typing)
test: $(STAMP)
	$(BIN)/tierline models pull --quiet
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy src bench
	$(BIN)/python -m pytest

# rebuild the shipped router from ../shared/routing-data (deterministic, ~15 min on 2 cores)
router-default: $(STAMP)
	PYTHONPATH=src $(BIN)/python -m tierline.routing.learned.build_default

# the held-out evaluation of docs/router-eval.md (SKIP_TRAIN=1: evaluate the shipped router)
router-eval: $(STAMP)
	PYTHON=$(BIN)/python bash bench/router_eval.sh

router-speed: $(STAMP)
	PYTHONPATH=src $(BIN)/python bench/router_speed.py

# the gateway benchmark against the upstream directly and LiteLLM (docs/performance.md)
perf: $(STAMP)
	bash bench/perf/run.sh

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy src bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
