#!/usr/bin/env bash
# Set up, then materialize the whole TPT graph of the embedded default experiment (local Ray, CPU, DuckDB file,
# SmolLM2-135M-Instruct thinking, a tiny LLaMA student). Runs are recorded in ./dagster_home, so `dagster dev`
# shows them afterwards; artifacts go to ./artifacts. A second run finds every stage finished and recomputes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export DAGSTER_HOME="$PWD/dagster_home"
exec .venv/bin/tpt run embedded
