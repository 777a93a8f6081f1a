#!/usr/bin/env bash
# GPU check: the paper preset trained for a fixed number of steps in bf16 on frozen features;
# prints samples/s, model FLOP utilisation, peak memory and the data path's windows/s
# (bench/gpu_check.py says how each is measured). Bounded to under 5 minutes.
#
#   bash bench/gpu_check.sh                        # on a CUDA machine: 200 steps at batch 48
#   bash bench/gpu_check.sh --device cpu --steps 3 # dry run of the same code on the CPU
#   bash bench/gpu_check.sh --fetch-wheels DIR     # on a machine with PyPI: download the wheels below
#
# The GPU machine this targets has torch 2.11 (CUDA 13) but no torchrec, no network, and cannot
# take the 465 MB CUDA fbgemm-gpu wheel. What it can take: fbgemm-gpu-cpu 1.6.0 + torchrec 1.6.1
# + tensordict + pyvers (cp312 wheels, a few MB). Put them in $KUAIHL_GPU_WHEELS (default:
# shared/wheels beside the repository, or wheels/ inside it): when `import torchrec` fails they
# are installed with --no-deps into a temporary directory put on PYTHONPATH (the machine's own
# packages are not touched). Embedding tables stay unsharded there (plain TorchRec collections on
# the device need no fbgemm kernel); sharding is tested on the CPU (tests/test_train.py,
# tests/test_multihost.py).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
py="${PYTHON:-${KUAIHL_VENV:+$KUAIHL_VENV/bin/python}}"
py="${py:-python3}"

if [ "${1:-}" = "--fetch-wheels" ]; then
  dest="${2:?--fetch-wheels DIR}"
  mkdir -p "$dest"
  # --no-deps: torch is on the GPU machine already. fbgemm 1.6 pairs with torch 2.11 (ENVIRONMENT notes);
  # tensordict 0.11 is the release of torch 2.11's time. The last five are small pure-Python (orjson:
  # one small binary) imports of torchrec / tensordict, in case the machine lacks them.
  "$py" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d "$dest" \
    fbgemm-gpu-cpu==1.6.0 torchrec==1.6.1 "tensordict>=0.11,<0.12" "pyvers>=0.2,<0.3" \
    pyre-extensions typing-inspect mypy-extensions cloudpickle orjson
  ls -l "$dest"
  exit 0
fi

export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}"
site=""
cleanup() { if [ -n "$site" ]; then rm -rf "$site"; fi; }
trap cleanup EXIT
if ! "$py" -c "import torchrec" >/dev/null 2>&1; then
  wheels="${KUAIHL_GPU_WHEELS:-}"
  if [ -z "$wheels" ]; then
    for cand in "$repo/../shared/wheels" "$repo/shared/wheels" "$repo/wheels"; do
      if ls "$cand"/torchrec-*.whl >/dev/null 2>&1; then wheels="$cand"; break; fi
    done
  fi
  if [ -z "$wheels" ] || ! ls "$wheels"/torchrec-*.whl >/dev/null 2>&1; then
    echo "gpu_check: torchrec is not importable and no wheels were found (KUAIHL_GPU_WHEELS, shared/wheels," \
         "wheels/); make them with: bash bench/gpu_check.sh --fetch-wheels wheels" >&2
    exit 2
  fi
  site="$(mktemp -d /tmp/kuaihl-gpu-site.XXXXXX)"
  "$py" -m pip install --quiet --no-deps --no-index --target "$site" "$wheels"/*.whl
  export PYTHONPATH="$site:$PYTHONPATH"
  if ! err="$("$py" -c "import torchrec" 2>&1)"; then
    echo "gpu_check: torchrec from $wheels does not import: $(echo "$err" | tail -n 1)" >&2
    exit 2
  fi
  echo "gpu_check: torchrec from $wheels (installed into $site for this run)"
fi
# a hard bound: the check must never hold a lent machine longer than this
timeout "${KUAIHL_GPU_CHECK_TIMEOUT_S:-290}" "$py" "$repo/bench/gpu_check.py" "$@"
