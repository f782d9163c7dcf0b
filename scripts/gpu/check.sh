# Issue 19 in one device call: the CUDA tests, then the benchmarks at the paper's sizes.
#   run: bash scripts/gpu/check.sh      (timeout_s 420; results under $OUT)
#   CPU check of this script: SMOKE=1 OUT=/tmp/out bash scripts/gpu/check.sh
# The device image has torch, numpy, scikit-image, tifffile, h5py, imageio, matplotlib, safetensors and
# pytest but no napari: the package runs from src/ and the tests' conftest skips napari's plugin set-up.
set -uo pipefail
: "${OUT:?set OUT to the folder whose files come back}"
cd "$(dirname "$0")/../.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$OUT"
PY=$(command -v python3 || command -v python)
START=$(date +%s)
BUDGET_S=${BUDGET_S:-380}
left() { echo $(( BUDGET_S - ($(date +%s) - START) )); }
log() { echo "[$(( $(date +%s) - START ))s] $*" | tee -a "$OUT/check.md"; }

if [ "${SMOKE:-0}" = 1 ]; then
  export BIOGANS_TEST_DEVICE=cpu OMP_NUM_THREADS=1
  DEVICE=cpu; TRAIN="--width 8 --batch-size 4 --iterations 2 --warmup 1 --no-compile"
  EVAL="--width 8 --batch-size 8 --steps 2 --splits 2 --cells 4 --inner 2"; GEN="--repeats 1 --frames 8"
  TESTS="-k shipped or nccl"
else
  DEVICE=cuda; TRAIN="--width 64 --batch-size 64 --iterations 50 --warmup 5"
  EVAL="--width 64 --batch-size 64 --steps 50 --splits 10 --cells 256 --inner 40"; GEN="--repeats 7"
  TESTS=""
fi

log "## GPU check ($(date -u +%F)): $(nvidia-smi -L 2>/dev/null | head -1 || echo no nvidia-smi); torch $($PY -c 'import torch; print(torch.__version__)')"
log "### 1. CUDA tests (tests/test_cuda.py)"
timeout $(( $(left) - 200 )) $PY -m pytest -m cuda tests/test_cuda.py -q -p no:cacheprovider -rA ${TESTS:+"$TESTS"} \
  > "$OUT/cuda_tests.txt" 2>&1
log "pytest exit $?: $(tail -1 "$OUT/cuda_tests.txt")"
for bench in "bench_train.py $TRAIN" "bench_eval.py $EVAL" "bench_generate.py $GEN"; do
  name=${bench%% *}
  if [ "$(left)" -lt 30 ]; then log "### $name: not run (out of time)"; continue; fi
  log "### $name --device $DEVICE ${bench#* }"
  timeout $(( $(left) - 10 )) $PY benchmarks/$bench --device $DEVICE > "$OUT/${name%.py}.md" 2>&1
  log "exit $?"; cat "$OUT/${name%.py}.md" >> "$OUT/check.md"
done
log "done"
