#!/usr/bin/env bash
# Sets up ./.venv if needed, finds Fashion-MNIST (../shared/datasets, /usr/share/datasets, ./data,
# $PARM_DATA; on Debian as root it installs the dataset-fashion-mnist package), then runs parm demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
have_data() { .venv/bin/python -c "from parity_models.data import find_dataset_dir as f; f('fashion-mnist', download=False)" 2>/dev/null; }
if ! have_data && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "Fashion-MNIST not found locally; installing Debian's dataset-fashion-mnist package"
  apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null; } || true
fi
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}  # torch threads sleep, not spin, when cores are shared
exec .venv/bin/parm --log-level WARNING demo "$@"
