#!/usr/bin/env bash
# Sets up ./.venv if needed, then runs the test suite (slow tests excluded; pass -m slow for them).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/ensure_data.sh  # the tests train and serve real models on a slice of real Fashion-MNIST
exec .venv/bin/python -m pytest -q -m "not slow" "$@"
