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
.venv/bin/pip install "${quiet[@]}" torch==2.13.0
.venv/bin/pip install "${quiet[@]}" -c requirements/lock.txt -e ".${extras:+[$extras]}"
