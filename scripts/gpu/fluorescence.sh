#!/bin/bash
# Device call 1 (about 8 min on an H100): training benchmark, evaluation benchmark, then the
# fluorescence models trained side by side on one GPU until the budget, packed in half precision.
#   run: bash scripts/gpu/fluorescence.sh        (kind nvidia-h100-x1, timeout_s 600)
source "$(dirname "$0")/common.sh"
log "device: $($PY -c 'import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")')"
simulate
log "simulated $(ls "${SIM}_train" | wc -l) protein folders"
if [ "$SMOKE" = 1 ]; then BENCH="--width 8 --batch-size 4 --iterations 2 --warmup 1 --no-compile"
  EVAL="--width 8 --batch-size 4 --steps 2 --splits 2 --cells 4 --inner 3"
else BENCH="--iterations 50 --warmup 5"; EVAL="--width 64 --batch-size 64 --steps 20 --cells 64 --inner 50"; fi
limit 150 $PY benchmarks/bench_train.py --device $DEVICE $BENCH > "$OUT/bench_train.md" 2>> "$OUT/log.txt" || log "bench_train failed"
limit 90 $PY benchmarks/bench_eval.py --device $DEVICE $EVAL > "$OUT/bench_eval.md" 2>> "$OUT/log.txt" || log "bench_eval failed"
log "benchmarks done"

LIMIT=$(minutes_left 60)
log "training for $LIMIT min"
train star-6 --model star --objective wgan-gp --proteins $STAR_PROTEINS --width $WIDTH &
train one-class-sep-2 --model one-class-sep --objective wgan-gp --proteins Sid2,Tea1 --width $WIDTH &
train projection-8 --model projection --objective wgan-gp --width $COND_WIDTH &
wait
trained
$PY scripts/gpu/half.py "$WORK/$STAGE" "$WORK/fluorescence"
pack fluorescence -C "$WORK" fluorescence
log "done"
