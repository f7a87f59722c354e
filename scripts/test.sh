#!/usr/bin/env bash
# Install surgeon with its test extras, lint, and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q torch==2.13.0
python -m pip install -q -e ".[test]"
ruff check .
ruff format --check .
python -m pytest -q "$@"
