"""How fast could each contender be if everything but its matrix products took no time?

Times inference and training steps of this project's SwinV2 and timm's on the same weights (the runners
of ``swinv2 bench``; medians of unprofiled calls, wall time, contenders interleaved) and profiles the same
calls for the time in matrix-product kernels (oneDNN's linear, ``mm`` / ``addmm`` / ``bmm`` and their
backward calls, the patch-embedding convolution). ``bound`` is the throughput with the products as
measured and the rest at zero: an upper bound for any change that keeps these kernels. SDPA's fused
kernel is not counted as a product (it also holds the softmax), which raises this project's fp32 bound
against timm's. A speed target above the bound cannot be reached by removing overhead; it would need
faster products than PyTorch's on this machine.

    python benchmarks/product_bound.py [--model swinv2_tiny_window8_256] [--img-size 256] [--batch 8]
                                       [--modes infer_fp32,infer_bf16,train_fp32] [--repeats 7]

Prints one row per contender and mode, then one JSON line. Run it alone: the machine's noise moves wall
time and product time alike only while nothing else runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile

from swinv2.tools.bench import _runner, build_contenders

# Kernels that are matrix products (self time; SDPA's fused kernel also holds softmax and is not counted,
# which only raises the bound).
PRODUCTS = {
    "mkldnn::_linear_pointwise",
    "aten::mm",
    "aten::addmm",
    "aten::bmm",
    "aten::baddbmm",
    "aten::mkldnn_convolution",
    "aten::convolution_backward",
}


def product_seconds(fn) -> float:
    """Seconds one profiled call spends in matrix-product kernels."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in PRODUCTS) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="swinv2_tiny_window8_256")
    parser.add_argument("--img-size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--modes", default="infer_fp32,infer_bf16,train_fp32")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.manual_seed(0)
    contenders = build_contenders(args.model, args.img_size, ("timm",))
    x = torch.randn(args.batch, 3, args.img_size, args.img_size)
    y = torch.randint(0, contenders[0].model.cfg.num_classes, (args.batch,))
    runners = {(c.name, mode): _runner(c, mode, x, y) for mode in args.modes.split(",") for c in contenders}
    for fn in runners.values():
        fn(), fn()  # warm-up
    walls: dict[tuple, list[float]] = {key: [] for key in runners}
    products: dict[tuple, list[float]] = {key: [] for key in runners}
    for _ in range(args.repeats):  # contenders interleaved, so the machine's drift hits all alike
        for key, fn in runners.items():
            start = time.perf_counter()
            fn()  # unprofiled: wall time, Python between the ops included
            walls[key].append(time.perf_counter() - start)
            products[key].append(product_seconds(fn))
    rows = []
    for name, mode in runners:
        total, product = statistics.median(walls[(name, mode)]), statistics.median(products[(name, mode)])
        rows.append(
            {
                "contender": name,
                "mode": mode,
                "img_per_s": args.batch / total,
                "product_share": product / total,
                "bound_img_per_s": args.batch / product,
            }
        )
    timm = {r["mode"]: r["img_per_s"] for r in rows if r["contender"] == "timm"}
    print(f"{'mode':<11} {'contender':<9} {'img/s':>7} {'products':>9} {'bound':>7} {'bound / timm':>12}")
    for r in rows:
        r["bound_x_timm"] = r["bound_img_per_s"] / timm[r["mode"]]
        print(
            f"{r['mode']:<11} {r['contender']:<9} {r['img_per_s']:>7.2f} {100 * r['product_share']:>8.1f}% "
            f"{r['bound_img_per_s']:>7.2f} {r['bound_x_timm']:>11.2f}x"
        )
    if "infer_bf16" in timm and "infer_fp32" in timm:
        for r in rows:
            if r["mode"] == "infer_bf16":
                r["bound_x_timm_fp32"] = r["bound_img_per_s"] / timm["infer_fp32"]
                print(f"{r['contender']} bf16 bound / timm fp32: {r['bound_x_timm_fp32']:.2f}x")
    print(json.dumps({"model": args.model, "img_size": args.img_size, "batch": args.batch, "rows": rows}))


if __name__ == "__main__":
    main()
