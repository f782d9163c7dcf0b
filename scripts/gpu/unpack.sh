#!/bin/bash
# Locally, after device calls: join and unpack the parts each call returned into .gpu/results.
#   bash scripts/gpu/unpack.sh FILES_AT_OF_A_CALL [FILES_AT_OF_ANOTHER ...]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
RESULTS_DIR=${RESULTS_DIR:-$ROOT/.gpu/results}
mkdir -p "$RESULTS_DIR"
for dir in "$@"; do
  for first in "$dir"/*.tar.gz.part00; do
    [ -e "$first" ] || continue
    cat "${first%00}"* | tar -xz -C "$RESULTS_DIR"
    echo "unpacked $(basename "${first%.tar.gz.part00}") from $dir"
  done
done
du -sh "$RESULTS_DIR"/*
