#!/usr/bin/env bash
# Sets up ./.venv if needed, then runs the test suite (slow tests excluded; pass -m slow for them).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q -m "not slow" "$@"
