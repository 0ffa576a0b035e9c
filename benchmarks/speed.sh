#!/usr/bin/env bash
# The speed table of docs/results.md: SwinV2-T, batch 8, 256 x 256, against timm, HF and torchvision.
# Usage: benchmarks/speed.sh [extra `swinv2 bench` flags], e.g. --device cuda --model swinv2_base_window8_256
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/swinv2 bench --model swinv2_tiny_window8_256 --img-size 256 --batch-size 8 --rounds 5 "$@"
