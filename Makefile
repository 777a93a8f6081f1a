# The README's two commands: `make demo` (main job on the embedded default) and `make test`.
# Each builds the virtual environment first (idempotent: seconds when it is already there).
VENV ?= $(or $(KUAIHL_VENV),.venv)
export KUAIHL_VENV := $(abspath $(VENV))
PY := $(VENV)/bin/python
# Two cores here; torch otherwise oversubscribes them when tests spawn ranks.
export OMP_NUM_THREADS ?= 2

.PHONY: setup demo test test-slow test-all bench clean-demo

setup:
	@bash scripts/setup_env.sh

demo: setup
	$(VENV)/bin/kuaihl demo --out runs/demo

# Two tiers: `make test` is the fast tier (everything not marked slow); `make test-slow` the
# multi-process, subprocess and multi-minute tests. CI (.ci/run) runs both.
test: setup
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

test-slow: setup
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

test-all: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: setup
	$(PY) bench/bench_world.py

clean-demo:
	rm -rf runs/demo
