#!/usr/bin/env bash
# Create .venv and install flux-serve with its test tools. Safe to run again.
# PyTorch is installed first and pinned: the CPU build by default; on a GPU machine install
# the CUDA build of torch into .venv beforehand (or set TORCH_SPEC) and it is kept.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip 2>/dev/null
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/python -m pip install --quiet $TORCH_SPEC
fi
.venv/bin/python -m pip install --quiet -e ".[test]"
# The browser tests (tests/browser) drive Debian's chromium through Playwright; the job-state tests
# run on SQLite and on a PostgreSQL server they start on loopback (Debian's postgresql binaries).
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
.venv/bin/python -c "import torch, diffusers, ray; print(f'flux-serve ready: torch {torch.__version__}, diffusers {diffusers.__version__}, ray {ray.__version__}')"
