# The README's two commands: `make demo` (main job on the embedded default) and `make test`.
# Each builds the virtual environment first (idempotent: seconds when it is already there).
VENV ?= $(or $(KUAIHL_VENV),.venv)
export KUAIHL_VENV := $(abspath $(VENV))
PY := $(VENV)/bin/python
# Two cores here; torch otherwise oversubscribes them when tests spawn ranks.
export OMP_NUM_THREADS ?= 2

.PHONY: setup demo test bench clean-demo

setup:
	@bash scripts/setup_env.sh

demo: setup
	$(VENV)/bin/kuaihl demo --out runs/demo

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: setup
	$(PY) bench/bench_world.py

clean-demo:
	rm -rf runs/demo
