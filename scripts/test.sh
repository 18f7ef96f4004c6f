#!/usr/bin/env bash
# Set up (idempotent) and run the test suite. Extra arguments go to pytest (e.g. -m slow).
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev || exit 1
# The report test opens the page in a real headless browser: Debian's chromium.
if ! command -v chromium >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  (apt-get install -y -q chromium || (apt-get update -q && apt-get install -y -q chromium)) >/dev/null || exit 1
fi
.venv/bin/python -m pytest "$@"
status=$?
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: that is a broken suite, not a pass" >&2
  exit 1
fi
exit "$status"
