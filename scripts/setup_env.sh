#!/usr/bin/env bash
# Build (or reuse) the project's virtual environment with the tested stack
# (docs/ENVIRONMENT.md): torch 2.14.1 + torchvision 0.29.1 + torchrec 1.9.2
# + fbgemm-gpu-cpu 1.9.0 (or the CUDA fbgemm-gpu where an NVIDIA driver answers).
#
# Idempotent: a stamp file records the hash of this script and of pyproject.toml;
# when both are unchanged the second run only checks the stamp (about a second).
# It never touches a directory it did not create: an existing path without our
# stamp is an error, not something to overwrite.
#
#   KUAIHL_VENV   where the environment lives (default: .venv in the repository)
#   KUAIHL_PYTHON the interpreter to build it from (default: python3.11, else python3)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${KUAIHL_VENV:-$repo/.venv}"
stamp="$venv/.kuaihl-setup-stamp"
marker="$venv/.kuaihl-made-this-venv"

want="$(cat "$0" "$repo/pyproject.toml" | sha256sum | cut -c1-16)"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "setup: environment $venv is up to date"
  exit 0
fi

if [ -e "$venv" ] && [ ! -f "$marker" ]; then
  echo "setup: $venv exists but was not made by this script; refusing to modify it." >&2
  echo "       Set KUAIHL_VENV to another path, or remove $venv yourself." >&2
  exit 2
fi

py="${KUAIHL_PYTHON:-}"
if [ -z "$py" ]; then
  if command -v python3.11 >/dev/null 2>&1; then py=python3.11; else py=python3; fi
fi

if [ ! -d "$venv" ]; then
  echo "setup: creating $venv with $($py --version)"
  "$py" -m venv "$venv"
  touch "$marker"
fi
pip=("$venv/bin/python" -m pip install --disable-pip-version-check -qq)

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  fbgemm="fbgemm-gpu==1.9.0"
  echo "setup: NVIDIA driver found, using the CUDA $fbgemm"
else
  fbgemm="fbgemm-gpu-cpu==1.9.0"
fi

echo "setup: installing torch 2.14.1, torchvision 0.29.1, $fbgemm (a few minutes on the first run)"
"${pip[@]}" "torch==2.14.1" "torchvision==0.29.1" "$fbgemm"
# torchrec's own metadata asks for the CUDA fbgemm-gpu, which cannot load without a driver:
# install it without dependencies and add its real ones explicitly.
"${pip[@]}" --no-deps "torchrec==1.9.2"
"${pip[@]}" tensordict pyre-extensions tqdm "torchmetrics==1.0.3" iopath
echo "setup: installing the project (editable) with its test extras"
"${pip[@]}" -e "$repo[dev]"
# If any resolver step pulled the CUDA fbgemm-gpu beside the CPU one, remove it (it cannot load here).
# Both wheels install into the same fbgemm_gpu/ package directory, so removing one deletes
# the other's files: reinstall the CPU wheel afterwards.
if [ "$fbgemm" = "fbgemm-gpu-cpu==1.9.0" ] && "$venv/bin/python" -m pip list 2>/dev/null | grep -qE '^fbgemm[-_]gpu +'; then
  "$venv/bin/python" -m pip uninstall -y -qq fbgemm-gpu
fi
if ! "$venv/bin/python" -c "import fbgemm_gpu" >/dev/null 2>&1; then
  "${pip[@]}" --force-reinstall --no-deps "$fbgemm"
fi

"$venv/bin/python" - <<'PY'
import torch, torchrec, fbgemm_gpu  # noqa: F401  (import check of the whole stack)
import timm, transformers, pandas, pyarrow  # noqa: F401
print(f"setup: ok: torch {torch.__version__}, torchrec {torchrec.__version__ if hasattr(torchrec, '__version__') else '?'}")
PY
echo "$want" > "$stamp"
echo "setup: done ($venv)"
