#!/usr/bin/env bash
# The dense-prediction tables of docs/dense.md: the default `swinv2 detect train` and `swinv2 segment train`
# (about 25 minutes each on 2 cores), a segmentation run with Swin V1's position table in place of Log-CPB,
# then every run tested at the training size and at 2x (images upsampled 2x) with the training window,
# with a 2x window, and (segmentation) by sliding training-size windows. One JSON line per evaluation.
# Usage: benchmarks/dense.sh [OUT]   (default runs/dense; finished runs are not retrained)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/dense}
S=.venv/bin/swinv2
train() {  # task folder [flags]: train unless the folder already holds a finished run
  local task=$1 dir=$2; shift 2
  [ -f "$dir/summary.json" ] || $S "$task" train --output "$dir" --no-progress "$@"
}
train detect "$OUT/detect"
train segment "$OUT/segment"
train segment "$OUT/segment-table" --position-bias table
for run in detect segment segment-table; do
  task=${run%%-*}
  $S "$task" eval "$OUT/$run" --json "$OUT/$run/eval-1x.json"
  $S "$task" eval "$OUT/$run" --test-size 256 --json "$OUT/$run/eval-2x-w8.json"
  $S "$task" eval "$OUT/$run" --test-size 256 --test-window 16 --json "$OUT/$run/eval-2x-w16.json"
  if [ "$task" = segment ]; then
    $S segment eval "$OUT/$run" --test-size 256 --slide --json "$OUT/$run/eval-2x-slide.json"
  fi
done
