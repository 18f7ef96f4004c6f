#!/usr/bin/env bash
# Set up (idempotent) and run the quickstart study.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/traitlens run examples/quickstart.yaml "$@"
