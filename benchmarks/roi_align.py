"""RoIAlign forward + backward: torchvision's kernel against the gather-based one, interleaved.

The workload is one Mask R-CNN training step of the default ``swinv2 detect train`` (16 images of 128 px,
64-channel pyramid, 128 sampled box RoIs per image at 7 x 7 and 32 positive mask RoIs at 14 x 14).
Prints the median milliseconds of each and their ratio, then one JSON line.

    python benchmarks/roi_align.py [--repeats 15] [--sampling 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torchvision.ops import MultiScaleRoIAlign

from swinv2.dense.roi_align import GatherMultiScaleRoIAlign

NAMES = ["0", "1", "2", "3"]


def workload(images: int = 16, channels: int = 64, size: int = 128, rois: int = 128):
    feats = {
        n: torch.randn(images, channels, size // 4 >> i, size // 4 >> i, requires_grad=True)
        for i, n in enumerate(NAMES)
    }
    boxes = []
    for _ in range(images):
        xy = torch.rand(rois, 2) * (size - 24)
        boxes.append(torch.cat([xy, xy + 8 + torch.rand(rois, 2) * 48], 1).clamp(max=size))
    return feats, boxes, [(size, size)] * images


def time_once(pool, feats, boxes, shapes) -> float:
    start = time.perf_counter()
    out = pool(feats, boxes, shapes)
    out.square().sum().backward()
    for f in feats.values():
        f.grad = None
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--sampling", type=int, default=1)
    args = parser.parse_args()
    torch.manual_seed(0)
    results = {}
    for label, output, rois in (("box 7x7", 7, 128), ("mask 14x14", 14, 32)):
        feats, boxes, shapes = workload(rois=rois)
        pools = {
            "torchvision": MultiScaleRoIAlign(NAMES, output, args.sampling),
            "gather": GatherMultiScaleRoIAlign(NAMES, output, args.sampling, always_gather=True),
        }
        times = {name: [] for name in pools}
        for pool in pools.values():  # warm-up
            time_once(pool, feats, boxes, shapes)
        for _ in range(args.repeats):  # interleaved, so drifts in machine load hit both
            for name, pool in pools.items():
                times[name].append(time_once(pool, feats, boxes, shapes))
        ms = {name: 1000 * statistics.median(t) for name, t in times.items()}
        ratio = ms["torchvision"] / ms["gather"]
        print(f"{label}: torchvision {ms['torchvision']:.1f} ms, gather {ms['gather']:.1f} ms -> {ratio:.2f}x")
        results[label] = {**ms, "speedup": ratio}
    print(json.dumps({"threads": torch.get_num_threads(), "sampling": args.sampling, **results}))


if __name__ == "__main__":
    main()
