#!/usr/bin/env bash
# Create .venv and install traitlens with every dependency pinned (requirements/lock.txt).
# torch goes first and pinned: a looser torch lets pip pick a multi-GB CUDA build.
# Usage: scripts/setup.sh [EXTRAS]   e.g. scripts/setup.sh dev
set -euo pipefail
cd "$(dirname "$0")/.."
extras=${1:-}

python=${PYTHON:-}
for candidate in python3.11 python3 python; do
  if [ -z "$python" ] && command -v "$candidate" >/dev/null &&
     "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    python=$candidate
  fi
done
if [ -z "$python" ]; then
  echo "traitlens needs Python 3.11 (torch==2.13.0 is pinned for it); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi

[ -x .venv/bin/python ] || "$python" -m venv .venv
# Downloads are cached by pip under ~/.cache/pip, so a rerun installs from disk.
quiet=(--quiet --disable-pip-version-check)

# Which torch build: TRAITLENS_TORCH=cuda or cpu, else cuda where an NVIDIA driver answers.
# To switch builds later, delete .venv first.
# PyPI's torch 2.13.0 for Linux x86_64 is the CUDA build (several GB of CUDA libraries); the
# CPU-only build comes from PyTorch's own index, unless pip already finds torch==2.13.0 without
# an index (a wheel in pip's --find-links, as on machines that ship one).
build=${TRAITLENS_TORCH:-}
if [ -z "$build" ]; then
  if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then build=cuda; else build=cpu; fi
fi
case "$build" in
  cuda) .venv/bin/pip install "${quiet[@]}" torch==2.13.0 ;;
  cpu)
    if .venv/bin/pip install "${quiet[@]}" --no-deps --no-index torch==2.13.0 2>/dev/null; then
      .venv/bin/pip install "${quiet[@]}" torch==2.13.0  # its dependencies
    else
      .venv/bin/pip install "${quiet[@]}" torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
    fi ;;
  *) echo "TRAITLENS_TORCH must be cuda or cpu; got '$build'" >&2; exit 1 ;;
esac
echo "torch: $(.venv/bin/python -c 'import torch; print(torch.__version__, "CUDA available" if torch.cuda.is_available() else "no CUDA device")' 2>/dev/null)"
.venv/bin/pip install "${quiet[@]}" -c requirements/lock.txt -e ".${extras:+[$extras]}"
