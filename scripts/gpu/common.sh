# Shared by the GPU stage scripts: settings, a clock, and how results go back through $OUT.
# SMOKE=1 runs every stage on the CPU with tiny settings (tests/test_gpu_scripts.py), bounded by work
# (a few iterations and steps), never by the clock: a loaded CI machine is slow, not wrong.
set -euo pipefail
: "${OUT:?set OUT to the folder whose files come back}"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"  # the device image has torch & co.; no install needed
PY=${PY:-$(command -v python3 || command -v python)}
BIOGANS="$PY -m napari_biogans.cli"
WORK=${WORK:-$ROOT/.gpu/work}  # git-ignored
mkdir -p "$WORK" "$OUT"
START=$(date +%s)
BUDGET_S=${BUDGET_S:-480}  # 3 calls x (8 min + a machine start) fit the 30 min of device time
SMOKE=${SMOKE:-0}
if [ "$SMOKE" = 1 ]; then
  DEVICE=cpu; CELLS=12; TEST_CELLS=12; WIDTH=8; COND_WIDTH=8; BATCH=4; LOG_EVERY=2; ITERATIONS=4
  THREADS=1
else  # training runs until the time limit that leaves room for what follows it
  DEVICE=cuda; CELLS=3400; TEST_CELLS=500; WIDTH=48; COND_WIDTH=48; BATCH=64; LOG_EVERY=50; ITERATIONS=1000000
  THREADS=4
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$THREADS}  # several runs share the machine's cores
STAR_PROTEINS=Alp14,Arp3,Cki2,Mkh1,Sid2,Tea1
ALL_PROTEINS=Alp14,Arp3,Cki2,Fim1,Mkh1,Sid2,Tea1,Tea4
SIM="$WORK/sim/LIN_Simulated_WT_size-48-80"

STAGE=runs-$(basename "$0" .sh)  # each call's run folders apart, also on a machine still warm from the last
mkdir -p "$WORK/$STAGE"

log() { echo "[$(( $(date +%s) - START ))s] $*" | tee -a "$OUT/log.txt"; }

# minutes left for training, keeping $1 seconds for what comes after it (the smoke run: no limit that binds)
minutes_left() {
  if [ "$SMOKE" = 1 ]; then echo 60; else $PY -c "print(max(0.2, ($BUDGET_S - ($(date +%s) - $START) - $1) / 60))"; fi
}

# limit SECONDS CMD...: CMD under `timeout` on the device; the smoke run's sizes bound it instead
limit() {
  local seconds=$1; shift
  if [ "$SMOKE" = 1 ]; then "$@"; else timeout "$seconds" "$@"; fi
}

simulate() {  # the simulated release every stage uses (seeded: the same cells on any machine)
  [ -d "${SIM}_train" ] || $BIOGANS simulate --out "$WORK/sim" --cells-per-class "$CELLS" \
    --test-cells-per-class "$TEST_CELLS" --proteins "$ALL_PROTEINS" --seed 7 >> "$OUT/log.txt"
}

trained() {  # one line: every run of this call and the iteration it reached
  log "trained: $(cd "$WORK/$STAGE" && for r in *; do echo -n "$r $(tail -1 $r/losses.csv | cut -d, -f1) it; "; done)"
}

# pack NAME PATH...: one tar.gz of the paths, split into parts under 15 MB (the 16 MB per-file limit)
pack() {
  local name=$1; shift
  tar -czf "$WORK/$name.tar.gz" "$@"
  split -b 15m -d "$WORK/$name.tar.gz" "$OUT/$name.tar.gz.part"
  log "packed $name: $(du -h "$WORK/$name.tar.gz" | cut -f1)"
}

# train NAME ARGS...: biogans train in $WORK/$STAGE/NAME until $LIMIT minutes, its exact command in command.txt
train() {
  local name=$1; shift
  local args=(train --data sim/LIN_Simulated_WT_size-48-80_train --out "$STAGE/$name" --device $DEVICE
              --iterations $ITERATIONS --batch-size $BATCH --seed 42 --checkpoint-every 1000 --log-every $LOG_EVERY
              --time-limit "$LIMIT" "$@")
  mkdir -p "$WORK/$STAGE/$name"
  echo "biogans simulate --out sim --cells-per-class $CELLS --test-cells-per-class $TEST_CELLS" \
       "--proteins $ALL_PROTEINS --seed 7 && biogans ${args[*]}" > "$WORK/$STAGE/$name/command.txt"
  (cd "$WORK" && $BIOGANS "${args[@]}") > "$WORK/$name.log" 2>&1 \
    || log "$name failed: $(tail -c 300 "$WORK/$name.log")"
}
