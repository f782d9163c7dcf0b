#!/bin/bash
# One device call (about 6 min with BUDGET_S=300): train the VNC segmenter on the GPU and ship it
# (float16 file, JSON and Markdown cards, reference sample) into $OUT, with its mean IU on sections 10-19.
#   locally first: mkdir -p .gpu/vnc && cp -r ../shared/data/vnc/stack1 .gpu/vnc/
#   run: bash scripts/gpu/segmenter.sh          (carry [".gpu/vnc"], timeout_s 600)
#   then: cp $FILES_AT/vnc-segmenter.* pretrained/
set -euo pipefail
cd "$(dirname "$0")/../.."
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
ARGS=(--data "${VNC:-.gpu/vnc/stack1}" --device cuda --batch-size 16 --crop 256 --width 8 --levels 4 --threads 8)
python3 scripts/train_segmenter.py train "${ARGS[@]}" --run /tmp/segmenter --iterations 40000 --save-every 1000 \
  --time-budget "${BUDGET_S:-300}"
python3 scripts/train_segmenter.py ship "${ARGS[@]}" --run /tmp/segmenter --out "$OUT/vnc-segmenter"
cp /tmp/segmenter/log.csv /tmp/segmenter/run.json "$OUT/"
