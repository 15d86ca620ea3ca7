#!/usr/bin/env bash
# The whole GPU measurement of the speed-ups (issue 18) in one go, within SUITE_BUDGET_S (default 450 s):
# flux-bench --real-size rows for 4B and 9B at 512 and 1024, 4 steps, batch 1, with each speed-up added in turn
# (eager, +compile, +FP8, +fast decode/encode), a summary table, and the GPU tests with their quality figures.
#
#   bench/gpu_suite.sh                 # on a CUDA machine: writes docs/bench-<gpu>/
#   bench/gpu_suite.sh --dry-run       # any machine: print the commands, run nothing
#   bench/gpu_suite.sh --out DIR --budget-s 450 --variants flux-2-klein-4b
#
#   bench/gpu_suite.sh --wheels .whl --export "$OUT"   # a lent machine: install carried wheels, send results back
#   bench/gpu_suite.sh --daily-loop    # issue 28's GPU figures instead: deterministic mode's cost, reference reuse
#
# Runs go most informative first (4B eager and all-on, then each step, then 9B); a run that would start with
# under 40 s left is skipped and listed in skipped.txt, so the suite ends inside its budget. FP8 needs torchao and
# GPU JPEG torchvision. A machine with PyTorch but without this project's other needs takes them as wheels
# (--wheels DIR, installed with --no-deps into /tmp/site): diffusers==0.42.1, cachetools, pydantic, pydantic-core,
# annotated-types, typing-inspection, torchao (the preflight import names anything still missing).
# --export DIR copies speedups.md and a tarball of the whole output there.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-.venv/bin/python}
[[ -x $PY ]] || PY=python3
DRY_RUN=0
WHEELS=""
EXPORT=""
BUDGET_S=${SUITE_BUDGET_S:-450}
OUT=""
VARIANTS="flux-2-klein-4b flux-2-klein-9b"
DAILY_LOOP=0

while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1; shift ;;
    --out) OUT="$2"; shift 2 ;;
    --budget-s) BUDGET_S="$2"; shift 2 ;;
    --variants) VARIANTS="${2//,/ }"; shift 2 ;;
    --wheels) WHEELS="$2"; shift 2 ;;
    --export) EXPORT="$2"; shift 2 ;;
    --daily-loop) DAILY_LOOP=1; shift ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "gpu_suite.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
done

if [[ -n $WHEELS && $DRY_RUN == 0 ]]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
if [[ $DRY_RUN == 1 ]]; then
  GPU=gpu
else
  "$PY" -c "import bench.flux_bench, bench.acceleration_bench, tests.gpu.test_gpu_acceleration" || {
    echo "gpu_suite.sh: a module above is missing; carry its wheel (--wheels DIR)" >&2; exit 1; }
  if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_suite.sh: no CUDA GPU here; run it on a GPU machine (or --dry-run to see the commands)" >&2
    exit 1
  fi
  GPU=$("$PY" -c "import torch; n = torch.cuda.get_device_name().lower().split(); print(next((w for w in n if any(c.isdigit() for c in w)), n[-1]))")
fi
OUT=${OUT:-docs/bench-$GPU}
DEADLINE=$(( $(date +%s) + BUDGET_S ))

COMMON=(--real-size --device cuda --steps 4 --batch-sizes 1 --resolutions 512,1024 --prompts 2)
BEFORE_IO=(--fast-decode off --gpu-jpeg off --png-compress-level 6 --output-format png)
declare -A FLAGS=(
  [eager]="--compile off ${BEFORE_IO[*]}"
  [compile]="--compile on ${BEFORE_IO[*]}"
  [compile-fp8]="--compile on --quantization fp8 ${BEFORE_IO[*]}"
  [compile-fp8-fastio]="--compile on --quantization fp8 --fast-decode on --gpu-jpeg auto --output-format jpeg"
)

HAVE_TORCHAO=1
if [[ $DRY_RUN == 0 ]] && ! "$PY" -c "import torchao" 2>/dev/null; then
  HAVE_TORCHAO=0
  echo "torchao is not installed: the FP8 rows run without FP8 (pip install torchao)" >&2
  FLAGS[compile-fp8]=""
  FLAGS[compile-fp8-fastio]="--compile on --fast-decode on --gpu-jpeg auto --output-format jpeg"
fi

run() {  # run NAME COMMAND...: within what is left of the budget, logged to OUT/NAME.log
  local name=$1; shift
  if [[ $DRY_RUN == 1 ]]; then echo "$*"; return 0; fi
  local left=$(( DEADLINE - $(date +%s) ))
  if (( left < 40 )); then echo "$name: skipped, ${left} s left of ${BUDGET_S}" | tee -a "$OUT/skipped.txt"; return 0; fi
  echo "== $name ($left s left)"
  if ! timeout "$left" "$@" >"$OUT/$name.log" 2>&1; then
    echo "$name: failed or ran out of time, see $name.log" | tee -a "$OUT/skipped.txt"
    tail -5 "$OUT/$name.log" >&2
  fi
}

[[ $DRY_RUN == 1 ]] || { mkdir -p "$OUT"; rm -f "$OUT/skipped.txt"; }
bench() {  # bench VARIANT CONFIG
  local flags=${FLAGS[$2]}
  if [[ -z $flags ]]; then
    [[ $DRY_RUN == 1 ]] || echo "$1 $2: skipped, torchao missing" >>"$OUT/skipped.txt"
    return 0
  fi
  # shellcheck disable=SC2086  # flags are words
  run "$1-$2" "$PY" -m bench.flux_bench "${COMMON[@]}" --variants "$1" $flags --out "$OUT/$1/$2"
}

if (( DAILY_LOOP )); then  # at real size, 1024 px: what determinism costs where batching pays, the caches on a GPU
  REAL=(--weights emulated:real --device cuda --size 1024)
  run determinism "$PY" -m bench.determinism "${REAL[@]}" --repeats 5
  run reference-cache-9b-kv "$PY" -m bench.reference_cache --model flux-2-klein-9b-kv "${REAL[@]}" --jobs 10
  run reference-cache-4b "$PY" -m bench.reference_cache "${REAL[@]}" --jobs 10
  if [[ $DRY_RUN == 0 && -n $EXPORT ]]; then mkdir -p "$EXPORT"; cp "$OUT"/*.log "$EXPORT/"; fi
  exit 0
fi

first=1
for variant in $VARIANTS; do
  order=(eager compile-fp8-fastio compile compile-fp8)
  for config in "${order[@]}"; do bench "$variant" "$config"; done
  if (( first )); then
    first=0
    run gpu-tests "$PY" -m pytest tests/gpu/test_gpu_acceleration.py -q -s -p no:cacheprovider
  fi
done
if [[ $DRY_RUN == 1 ]]; then
  echo "$PY -m bench.acceleration_bench summarize $OUT"
else
  "$PY" -m bench.acceleration_bench summarize "$OUT" && echo "torchao: $HAVE_TORCHAO; wrote $OUT"
  if [[ -n $EXPORT ]]; then
    mkdir -p "$EXPORT"
    cp "$OUT/speedups.md" "$EXPORT/" 2>/dev/null || true
    tar czf "$EXPORT/bench-$GPU.tar.gz" -C "$(dirname "$OUT")" "$(basename "$OUT")"
  fi
fi
