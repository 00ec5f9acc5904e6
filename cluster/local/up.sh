#!/usr/bin/env bash
# Start a local Ray head (and with --nodes N, N more nodes) and an MLflow server on 127.0.0.1.
# Options: python -m cluster.local up --help. Stop them with cluster/local/down.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec "${PYTHON:-.venv/bin/python}" -m cluster.local up "$@"
