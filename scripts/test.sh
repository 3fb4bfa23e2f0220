#!/usr/bin/env bash
# Install the broker with its test tools into ./.venv, then lint, type-check and run every test
# (unit, integration against a real nats-server, fault). Used verbatim by the README and .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'
echo "== ruff"; .venv/bin/ruff check .
echo "== mypy (strict: broker, schemas, adapters)"; .venv/bin/mypy
echo "== pytest"; .venv/bin/python -m pytest "$@"
