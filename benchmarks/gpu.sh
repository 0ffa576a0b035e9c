#!/usr/bin/env bash
# Every GPU figure of docs/results.md in one run (a lent GPU's time is short):
#   1. CUDA parity: fused (SDPA) vs explicit attention, forward and gradients; this project vs timm;
#   2. the speed table (`swinv2 bench`) for SwinV2-T and -B at 256 and 384 px, fp32 and bf16 ("bench");
#      whether the shift mask built only for the border windows pays on the GPU (`benchmarks/shift_mask.py`,
#      "shiftmask"); which attention route (SDPA kernel list, or explicit products) is fastest for the whole
#      model (`benchmarks/attention_routes.py`, "routes");
#   3. the largest trainable side of SwinV2-B and -L, plain and with each saver set, capped at $CAPACITY_GIB
#      (default 79 GiB: an 80 GB card; one process per saver set);
#   4. `swinv2 train --strategy fsdp` under torchrun with NCCL (one process on a one-GPU machine).
# Usage: OUT=dir [SECTIONS="parity bench shiftmask routes maxres nccl"] benchmarks/gpu.sh   (needs python3 with CUDA torch,
# timm, transformers; Fashion-MNIST for step 4 in $SWINV2_DATA or the Debian location). Each step has its
# own time limit; logs go to $OUT. All of them take up to ~19 minutes (maxres up to 12): split them with
# SECTIONS where one call may run 10. Measured on an H100: parity 0.3, bench 3, routes 1 minute; nccl 0.5 on an H200.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
SECTIONS=${SECTIONS:-parity bench shiftmask routes maxres nccl}
section() { echo "=== $* ($(date +%T))"; }
wanted() { [[ " $SECTIONS " == *" $1 "* ]]; }

{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    $PY -c "import torch, timm, transformers; print('torch', torch.__version__, 'timm', timm.__version__, 'transformers', transformers.__version__)"
} 2>&1 | tee "$OUT/env.log"

if wanted parity; then
    section parity
    timeout 50 $PY benchmarks/cuda_parity.py 2>&1 | tee "$OUT/parity.log"
fi

bench() { timeout "$1" $PY -m swinv2 bench --device cuda --rounds 3 --iters 3 "${@:2}" 2>&1 | tee -a "$OUT/bench.log"; }
if wanted bench; then
    section bench
    bench 55 --model swinv2_tiny_window8_256 --img-size 256 --batch-size 64
    bench 65 --model swinv2_tiny_window16_256 --img-size 384 --window-size 24 --batch-size 32
    bench 65 --model swinv2_base_window8_256 --img-size 256 --batch-size 64
    # timm's fp32 training step alone peaks at 62 GB here; with HF and torchvision too, 80 GB runs out
    bench 75 --model swinv2_base_window12to24_192to384 --img-size 384 --batch-size 32 --peers timm
fi
if wanted shiftmask; then
    section shift-mask
    for dtype in float32 bfloat16; do  # SwinV2-T stage 1 at batch 64; B at 384 px (w24) stage 1 at batch 32
        timeout 30 $PY benchmarks/shift_mask.py --device cuda --dtype $dtype --batch 64 2>&1 | tee -a "$OUT/bench.log"
        timeout 30 $PY benchmarks/shift_mask.py --device cuda --dtype $dtype --batch 32 --feat 96 --window 24 \
            --heads 4 2>&1 | tee -a "$OUT/bench.log"
    done
fi

if wanted routes; then
    section attention-routes
    routes() { timeout "$1" $PY benchmarks/attention_routes.py --device cuda "${@:2}" 2>&1 | tee -a "$OUT/routes.log"; }
    routes 60 --model swinv2_tiny_window8_256 --batch 64
    routes 90 --model swinv2_base_window12to24_192to384 --img-size 384 --batch 32
fi

if wanted maxres; then
    section max-res
    for model in swinv2_base_window16_256 swinv2_large_window12to16_192to256; do
        timeout 360 $PY -m swinv2 bench-max-res --model "$model" --start 2048 --budget-s 50 \
            --capacity-gib "${CAPACITY_GIB:-79}" 2>&1 | tee -a "$OUT/maxres.log"
    done
fi

if wanted nccl; then
    section nccl  # fsdp: ddp in one process falls back to plain training, without NCCL
    timeout 35 $PY -m torch.distributed.run --nproc_per_node 1 -m swinv2 train --model swinv2_mini_window8_64 \
        --strategy fsdp --device cuda --amp bf16 --epochs 1 --train-limit 4096 --val-limit 2000 \
        --batch-size 128 --output /tmp/nccl_fsdp --no-progress 2>&1 | tail -8 | tee -a "$OUT/nccl.log"
fi
section done
