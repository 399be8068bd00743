#!/usr/bin/env bash
# Creates ./.venv and installs the project with its test dependencies. Idempotent: reinstalls
# only when pyproject.toml changed. torch is pinned to the CPU build found on these machines;
# set TORCH_SPEC (e.g. TORCH_SPEC=torch) to choose another build.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
stamp=.venv/.parm-installed
want=$(sha256sum pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check "${TORCH_SPEC:-torch==2.13.0}"
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test]"
  echo "$want" > "$stamp"
fi
