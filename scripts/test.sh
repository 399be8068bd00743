#!/usr/bin/env bash
# Sets up ./.venv if needed, then runs the test suite (slow tests excluded; pass -m slow for them).
# Without arguments it then sets up ./.venv-ray and runs the Ray Serve tests (tests/ray) there;
# PARM_SKIP_RAY=1 skips them. With arguments, only the main suite runs, with those arguments.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/ensure_data.sh  # the tests train and serve real models on a slice of real Fashion-MNIST
if [ $# -gt 0 ]; then
  exec .venv/bin/python -m pytest -q -m "not slow" --ignore=tests/ray "$@"
fi
.venv/bin/python -m pytest -q -m "not slow" --ignore=tests/ray
if [ "${PARM_SKIP_RAY:-0}" != 1 ]; then
  bash scripts/setup_ray.sh
  .venv-ray/bin/python -m pytest -q -m "not slow" tests/ray
fi
