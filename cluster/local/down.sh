#!/usr/bin/env bash
# Stop what cluster/local/up.sh started (or only the services named, e.g. ray-node-1 mlflow).
set -euo pipefail
cd "$(dirname "$0")/../.."
exec "${PYTHON:-.venv/bin/python}" -m cluster.local down "$@"
