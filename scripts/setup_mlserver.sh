#!/usr/bin/env bash
# Installs Seldon MLServer (needed by tests/integration/test_mlserver.py) into ./.venv, or into the
# environment of $PYTHON. Idempotent. mlserver 1.7 installs beside the project's pins without
# changing numpy, torch or aiohttp, so no separate environment is needed.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
"$python" -c "import mlserver" 2>/dev/null && exit 0
"$python" -m pip install -q --disable-pip-version-check "${MLSERVER_SPEC:-mlserver>=1.6,<2}"
"$python" -c "import mlserver; print('mlserver', mlserver.__version__, 'installed')"
