#!/usr/bin/env bash
# The dense-prediction tables of docs/dense.md: the default `swinv2 detect train` and `swinv2 segment train`
# (20-25 minutes each on 2 cores), then each run tested at its training size and at 2x (images upsampled
# 2x) with the training window, with a 2x window (Log-CPB extrapolating), and (segmentation) by sliding
# training-size windows. One JSON line per evaluation, also kept in the run folders.
# TABLE=1 adds a segmentation run with Swin V1's position table instead of Log-CPB, tested the same way.
# Usage: benchmarks/dense.sh [OUT]   (default runs/dense; finished runs are not retrained)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/dense}
S=.venv/bin/swinv2
train() {  # task folder [flags]: train unless the folder already holds a finished run
  local task=$1 dir=$2; shift 2
  [ -f "$dir/summary.json" ] || $S "$task" train --output "$dir" --no-progress "$@"
}
runs="detect segment"
train detect "$OUT/detect"
train segment "$OUT/segment"
if [ "${TABLE:-0}" = 1 ]; then
  train segment "$OUT/segment-table" --position-bias table
  runs="$runs segment-table"
fi
for run in $runs; do
  task=${run%%-*}
  $S "$task" eval "$OUT/$run" --json "$OUT/$run/eval-1x.json"
  $S "$task" eval "$OUT/$run" --test-size 256 --json "$OUT/$run/eval-2x-w8.json"
  $S "$task" eval "$OUT/$run" --test-size 256 --test-window 16 --json "$OUT/$run/eval-2x-w16.json"
  if [ "$task" = segment ]; then
    $S segment eval "$OUT/$run" --test-size 256 --slide --json "$OUT/$run/eval-2x-slide.json"
  fi
done
