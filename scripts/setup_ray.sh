#!/usr/bin/env bash
# Creates ./.venv-ray: the project with its Ray extra (ray[serve], pinned) and pytest, for the Ray
# Serve deployment and its tests (tests/ray). A separate environment because Ray Serve needs a
# fastapi newer than the one MLServer (a test dependency of .venv) accepts. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
[ -x .venv-ray/bin/python ] || "$python" -m venv .venv-ray
stamp=.venv-ray/.parm-installed
want=$(sha256sum pyproject.toml scripts/setup_ray.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv-ray/bin/python -m pip install -q --disable-pip-version-check "${TORCH_SPEC:-torch==2.13.0}"
  .venv-ray/bin/python -m pip install -q --disable-pip-version-check -e ".[ray]" "pytest>=8" "pytest-asyncio>=0.23" "pyyaml>=6"
  echo "$want" > "$stamp"
fi
