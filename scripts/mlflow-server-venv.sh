#!/usr/bin/env bash
# A venv of its own with the full MLflow server for the mirror's tests (tests/test_mirror_mlflow.py):
# the server's dependencies (Flask, SQLAlchemy, alembic, …) stay out of pushtune's venv.
# Usage: scripts/mlflow-server-venv.sh [DIR]   (default .venv-mlflow); prints DIR/bin/mlflow.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-.venv-mlflow}"
version="3.18.0"
if ! "$dir/bin/mlflow" --version 2>/dev/null | grep -q "$version"; then
    python3 -m venv "$dir"
    "$dir/bin/pip" install --quiet --upgrade pip
    "$dir/bin/pip" install --quiet "mlflow==$version"
fi
echo "$(cd "$dir" && pwd)/bin/mlflow"
