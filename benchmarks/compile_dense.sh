#!/usr/bin/env bash
# --compile for swinv2 detect|segment train: epoch speed with and without it, and the compile time.
# Each task trains 3 epochs of 512 default scenes (128 px) eager, compiled with an empty inductor cache
# (cold: the first epoch holds the compilation), and compiled again with that cache (warm); the runs of a
# task follow each other on an otherwise idle machine. Prints one line per run: epoch seconds and img/s.
#   bash benchmarks/compile_dense.sh [OUT]
set -euo pipefail
OUT=${1:-runs/compile_dense}
PY=${PYTHON:-python}
rm -rf "$OUT"
mkdir -p "$OUT"
export TORCHINDUCTOR_CACHE_DIR="$OUT/inductor"
$PY -m swinv2 scenes > /dev/null  # the default scenes, written once, outside the timed runs
for task in detect segment; do
  for mode in off cold warm; do
    compile=on; [ "$mode" = off ] && compile=off
    start=$(date +%s.%N)
    $PY -m swinv2 "$task" train --train-limit 512 --val-limit 64 --epochs 3 --amp none --compile "$compile" \
      --pictures 1 --no-progress --output "$OUT/${task}_$mode" > "$OUT/${task}_$mode.log" 2>&1
    wall=$(echo "$(date +%s.%N) - $start" | bc)
    $PY - "$OUT/${task}_$mode" "$wall" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1] + "/metrics.jsonl")]
epochs = "  ".join(f"{r['seconds']:.1f}s ({r['img_per_s']:.1f} img/s)" for r in rows)
print(f"{sys.argv[1].rsplit('/', 1)[1]:<16} wall {float(sys.argv[2]):.1f}s  epochs: {epochs}")
PYEOF
  done
done
