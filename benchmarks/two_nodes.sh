#!/usr/bin/env bash
# Usage: benchmarks/two_nodes.sh [OUT]  (docs/training.md, "Several processes")
# Two torchrun agents ("nodes") on one machine, one rank each, c10d rendezvous on 127.0.0.1:
# train, kill -9 both mid-run, resume with the same command, compare with one process.
set -u
cd "$(dirname "$0")/.."
OUT=${1:-runs/two_nodes}; rm -rf "$OUT"; mkdir -p "$OUT"
export OMP_NUM_THREADS=1
FLAGS="--train-limit 2048 --val-limit 256 --batch-size 64 --epochs 2 --checkpoint-every 3 --amp none"
launch() {  # $1: tag, rest: train args
  local tag=$1; shift
  local port=$(.venv/bin/python -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
  for node in 0 1; do
    setsid .venv/bin/python -m torch.distributed.run --nnodes 2 --nproc_per_node 1 --rdzv_backend c10d \
      --rdzv_endpoint 127.0.0.1:$port --rdzv_id $tag -m swinv2 "$@" > $OUT/$tag.node$node.log 2>&1 &
    echo $! > $OUT/$tag.node$node.pid
  done
}
.venv/bin/swinv2 train $FLAGS --output $OUT/single --no-progress > $OUT/single.log 2>&1
launch ddp_ref train $FLAGS --strategy ddp --output $OUT/ddp_ref --no-progress; wait
launch first train $FLAGS --strategy ddp --output $OUT/run --no-progress
# kill both nodes (process groups) once a checkpoint inside epoch 2 exists
until ls $OUT/run/checkpoint-0001-*.pt >/dev/null 2>&1; do sleep 0.05; done
sleep 0.3
.venv/bin/python -c "import sys; sys.path.insert(0, 'tests'); from faults import kill_tree; [kill_tree(int(open('$OUT/first.node%d.pid' % n).read())) for n in (0, 1)]"
sleep 1
echo "after the kill: $(ls $OUT/run | grep checkpoint | tr '\n' ' ')"
launch again train --resume $OUT/run --no-progress; wait
grep -h "resuming\|done:" $OUT/again.node*.log
.venv/bin/python - <<PY
import sys; sys.path.insert(0, "tests")
from pathlib import Path
from faults import same_run
from swinv2.train.state import read_metrics
o = Path("$OUT")
print("two-node resumed == two-node uninterrupted:", same_run(o / "run", o / "ddp_ref"))
a, b = read_metrics(o / "ddp_ref"), read_metrics(o / "single")
print("two-node vs one process, train_loss rel diff per epoch:", [abs(x["train_loss"] - y["train_loss"]) / y["train_loss"] for x, y in zip(a, b)])
print("top1:", [x["top1"] for x in a], [y["top1"] for y in b])
PY
