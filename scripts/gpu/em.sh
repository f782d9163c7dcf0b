#!/bin/bash
# Device call 2 (about 8 min): EM render benchmark, then vnc-dsgan on sections 00-09 beside the
# three conditional comparison models (same 6 proteins as star-6), packed in half precision.
#   locally first: mkdir -p .gpu/vnc && cp -r ../shared/data/vnc/stack1 .gpu/vnc/
#   run: bash scripts/gpu/em.sh                 (carry [".gpu/vnc"], timeout_s 600)
source "$(dirname "$0")/common.sh"
simulate
if [ "$SMOKE" = 1 ]; then
  VNC=${VNC:-$ROOT/tests/fixtures/vnc/stack1}
  EM="--crop 128 --label-width 4 --image-width 4 --sections 0 1"; RENDER="--repeats 1 --size 384"; EM_EVAL_S=120
  EM_EVAL="--generated 2 --size 128 --segmenter-iterations 2 --c2st-steps 2 --width 8 --batch-size 8"
  EM_EVAL="$EM_EVAL --birthday-batch-sizes 10 --birthday-repeats 2 --sections-train 0-1 --sections-val 10"
else
  VNC=${VNC:-$ROOT/.gpu/vnc/stack1}
  EM="--crop 256 --batch-size 4"; RENDER="--repeats 3"; EM_EVAL_S=200; EM_EVAL=""
fi
limit 120 $PY benchmarks/bench_em_render.py --device $DEVICE $RENDER > "$OUT/bench_em_render.md" 2>> "$OUT/log.txt" \
  || log "bench_em_render failed"
LIMIT=$(minutes_left $EM_EVAL_S)
log "training for $LIMIT min"
EM_ARGS=(train-em --data "$VNC" --model dsgan $EM --iterations $ITERATIONS --device $DEVICE --checkpoint-every 1000
         --half --time-limit "$LIMIT" --out "$WORK/$STAGE/vnc-dsgan")
mkdir -p "$WORK/$STAGE/vnc-dsgan"
echo "biogans ${EM_ARGS[*]}" | sed "s#$VNC#VNC/stack1#; s#$WORK/$STAGE/##" > "$WORK/$STAGE/vnc-dsgan/command.txt"
$BIOGANS "${EM_ARGS[@]}" > "$WORK/vnc-dsgan.log" 2>&1 || log "vnc-dsgan failed: $(tail -c 300 "$WORK/vnc-dsgan.log")" &
train cgan-6 --model cgan --objective wgan-gp --proteins $STAR_PROTEINS --width $COND_WIDTH &
train multichannel-masked-6 --model multichannel-masked --objective wgan-gp --proteins $STAR_PROTEINS \
  --width $COND_WIDTH &
train projection-6 --model projection --objective wgan-gp --proteins $STAR_PROTEINS --width $COND_WIDTH &
wait
trained
# the EM diagnostics need the VNC sections, which are here now: publish vnc-dsgan in this call
limit $((EM_EVAL_S - 20)) $PY scripts/publish_model.py --run "$WORK/$STAGE/vnc-dsgan" --name vnc-dsgan --vnc "$VNC" \
  --device $DEVICE --em-options "$EM_EVAL" --out "$WORK/em/pretrained" \
  --training-command "$(cat "$WORK/$STAGE/vnc-dsgan/command.txt")" \
  --summary "DSGAN (label generator G_y + image generator G_x, trained end to end with a reconstructor) on the real VNC sections 00-09." \
  >> "$OUT/log.txt" 2>&1 || log "publishing vnc-dsgan failed"
$PY scripts/gpu/half.py "$WORK/$STAGE" "$WORK/em"
pack em -C "$WORK" em
log "done"
