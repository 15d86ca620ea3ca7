#!/usr/bin/env bash
# Create .venv and install flux-serve with its test tools. Safe to run again.
# PyTorch is installed first and pinned. Without an NVIDIA GPU (no working nvidia-smi) it takes the
# CPU build from PyTorch's CPU index when that index answers (about 200 MB instead of several GB
# of CUDA libraries); with a GPU, or offline, the configured index's build. TORCH_SPEC and
# TORCH_INDEX_URL override both; a torch already in .venv is kept.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
CPU_TORCH_INDEX="https://download.pytorch.org/whl/cpu"

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip 2>/dev/null
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if [ -z "${TORCH_INDEX_URL:-}" ] && ! nvidia-smi >/dev/null 2>&1 \
    && curl -fsS -m 5 -o /dev/null "$CPU_TORCH_INDEX/torch/" 2>/dev/null; then
    TORCH_INDEX_URL="$CPU_TORCH_INDEX"
  fi
  .venv/bin/python -m pip install --quiet $TORCH_SPEC ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"}
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
