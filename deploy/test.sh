#!/usr/bin/env bash
# The README's test command: installs everything, then lint, type checks and the whole test suite.
# Extra arguments go to pytest (e.g. deploy/test.sh tests/engine -x).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash deploy/setup.sh --dev --java --browser
echo "== ruff" && .venv/bin/ruff check .
echo "== mypy" && .venv/bin/mypy
echo "== pytest" && exec .venv/bin/python -m pytest "$@"
