#!/usr/bin/env bash
# Makes Fashion-MNIST findable (parity_models.data's lookup: --data-dir, $PARM_DATA,
# /usr/share/datasets, ./data, ../shared/datasets): when none has it and this runs as root on
# Debian, installs Debian's dataset-fashion-mnist package (offline-safe: it comes from the package
# registry). Used by demo.sh and test.sh. Needs ./.venv (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
have_data() { .venv/bin/python -c "from parity_models.data import find_dataset_dir as f; f('fashion-mnist', download=False)" 2>/dev/null; }
if ! have_data && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "Fashion-MNIST not found locally; installing Debian's dataset-fashion-mnist package"
  apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null; } || true
fi
have_data || echo "warning: Fashion-MNIST not found; the tests that train real models will fail (install Debian's dataset-fashion-mnist or set PARM_DATA)" >&2
