#!/usr/bin/env bash
# Sets up ./.venv if needed, finds Fashion-MNIST (../shared/datasets, /usr/share/datasets, ./data,
# $PARM_DATA; on Debian as root it installs the dataset-fashion-mnist package), then runs parm demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/ensure_data.sh
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}  # torch threads sleep, not spin, when cores are shared
exec .venv/bin/parm --log-level WARNING demo "$@"
