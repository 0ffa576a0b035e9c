#!/usr/bin/env bash
# The memory table of docs/results.md: one training step of SwinV2-T at 1024 x 1024, batch 1, this project
# plain and with each memory saver against timm plain and with its checkpointing (~8 minutes on 2 cores).
# Usage: benchmarks/memory.sh [extra `swinv2 bench-memory` flags], e.g. --device cuda --img-size 1536
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/swinv2 bench-memory --model swinv2_tiny_window8_256 --img-size 1024 --batch-size 1 "$@"
