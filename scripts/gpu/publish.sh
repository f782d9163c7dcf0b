#!/bin/bash
# Device call 3 (about 8 min): the fluorescence models' cards (C2ST, reconstruction against the
# nearest neighbour, interpolation growth) and the comparison table, on the GPU.
#   locally first: bash scripts/gpu/unpack.sh DIR_OF_CALL_1 DIR_OF_CALL_2   (fills .gpu/results)
#   run: bash scripts/gpu/publish.sh            (carry [".gpu/results"], timeout_s 600)
source "$(dirname "$0")/common.sh"
RESULTS=${RESULTS:-$ROOT/.gpu/results}
simulate
if [ "$SMOKE" = 1 ]; then
  DIAG=(--c2st-steps 2 --c2st-splits 2 --c2st-width 8 --c2st-batch-size 8 --reconstruct-cells 4 --reconstruct-steps 2
        --interpolation-pairs 2)
  COMPARE=(--c2st-steps 2 --c2st-splits 2 --c2st-width 8 --c2st-batch-size 8 --generated 8 --classifier-iterations 2)
else  # METHODS: C2ST 10 splits; reconstruction 5 restarts x 50 L-BFGS iterations (publish uses 3 restarts)
  DIAG=(--c2st-steps ${C2ST_STEPS:-1000} --c2st-splits 10 --c2st-width 64 --reconstruct-cells 200
        --reconstruct-steps 50 --interpolation-pairs 50)
  COMPARE=(--c2st-steps ${C2ST_STEPS:-1000} --c2st-splits 10 --c2st-width 64 --generated 500
           --classifier-iterations 2000)
fi
publish() {  # publish NAME SUMMARY [LIMIT...]
  local name=$1 summary=$2; shift 2
  local limits=(); for l in "$@"; do limits+=(--limit "$l"); done
  limit "$LEFT" $PY scripts/publish_model.py --run "$RESULTS/fluorescence/$name" --name "$name" --test "${SIM}_test" \
    --train "${SIM}_train" --device $DEVICE "${DIAG[@]}" --out "$WORK/pretrained" \
    --training-command "$(cat "$RESULTS/fluorescence/$name/command.txt")" --summary "$summary" "${limits[@]}" \
    >> "$OUT/log.txt" 2>&1 && log "published $name" || log "publishing $name failed"
}
LEFT=$(( BUDGET_S - ($(date +%s) - START) - 40 ))  # seconds for every evaluation, all run at once on the GPU
GPU="trained on one GPU for a few minutes within a 30-minute device budget, far fewer iterations than the paper's"
publish star-6 "Star-shaped WGAN-GP (Osokin et al. 2017): one red Bgs4 tower shared by six green towers (Alp14, Arp3, Cki2, Mkh1, Sid2, Tea1), so every sample shows the six proteins on one red cell." "$GPU" &
publish one-class-sep-2 "One-class separable WGAN-GP baseline (Osokin et al. 2017, the paper's strongest baseline): one green-on-red separable generator per protein (Sid2, Tea1), each with its own red cell, so the two proteins are not on the same cell (compare star-6)." "$GPU" "each protein has its own red cell: the green channels of one sample are not of the same cell" &
publish projection-8 "Projection-discriminator conditional GAN (Miyato & Koyama; the Skripnyuk thesis) over all eight simulated proteins: one network with conditional batch norm, a red part shared by all classes, WGAN-GP (the hinge loss stalled it on these cells)." "$GPU" &
M="$RESULTS/em"
limit "$LEFT" $PY scripts/compare_models.py --model star-6="$RESULTS/fluorescence/star-6/generator.safetensors" \
  --model cgan="$M/cgan-6/generator.safetensors" --model multichannel-masked="$M/multichannel-masked-6/generator.safetensors" \
  --model projection="$M/projection-6/generator.safetensors" --train "${SIM}_train" --test "${SIM}_test" \
  --device $DEVICE "${COMPARE[@]}" --out "$WORK/comparison" \
  --note "The same six simulated proteins; star-6 trained in device call 1, the other three side by side in call 2, each for the minutes left in its call (iterations in the last rows; scripts/gpu)." \
  >> "$OUT/log.txt" 2>&1 && log "compared" || log "comparison failed" &
wait
mkdir -p "$WORK/pretrained" "$WORK/comparison"  # pack what there is, even after a failure
cp "$WORK/comparison/comparison.md" "$OUT/" 2>/dev/null || true
pack published -C "$WORK" pretrained comparison
log "done"
