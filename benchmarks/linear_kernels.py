"""GFLOP/s of SwinV2-T's linear-layer products on PyTorch's own kernels (MKL / OpenBLAS: ``F.linear``,
``a @ b``) and on oneDNN (``torch.ops.mkldnn._linear_pointwise``, the kernel of ``swinv2/layers/linear.py``),
for the forward product, the input gradient and the weight gradient, at the token counts of a batch.

Which library is faster depends on the CPU (on AMD Zen 5 oneDNN's fp32 products ran at twice MKL's, on
other CPUs the two are close): this table is the evidence behind the routing on each CPU class, and
``--dtype bfloat16`` shows whether bf16 runs natively. Kernels are interleaved, medians of ``--repeats``.

    python benchmarks/linear_kernels.py [--batch 8] [--img-size 256] [--dtype float32] [--repeats 7]

Prints one row per layer, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

# SwinV2-T: (stage, tokens per image at 256 px, channels); its layers: qkv, proj, fc1, fc2, patch merging.
STAGES = ((1, 64 * 64, 96), (2, 32 * 32, 192), (3, 16 * 16, 384), (4, 8 * 8, 768))


def layers(batch: int, img_size: int) -> list[tuple[str, int, int, int]]:
    """``(name, tokens, in, out)`` of every distinct linear-layer shape of SwinV2-T."""
    scale = (img_size / 256) ** 2
    rows = []
    for stage, tokens, c in STAGES:
        m = int(batch * tokens * scale)
        rows += [(f"stage {stage} qkv", m, c, 3 * c), (f"stage {stage} proj", m, c, c)]
        rows += [(f"stage {stage} fc1", m, c, 4 * c), (f"stage {stage} fc2", m, 4 * c, c)]
        if stage > 1:
            rows.append((f"stage {stage} merge", m, 2 * c, c))
    return rows


def onednn(a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``a @ w.T`` on oneDNN."""
    return torch.ops.mkldnn._linear_pointwise(a, w, None, "none", [], "")


def products(m: int, k: int, n: int, dtype: torch.dtype) -> dict[str, tuple]:
    """The three products of a ``(m, k) -> (m, n)`` layer, each on both libraries (callables)."""
    x, w, g = (torch.randn(*shape).to(dtype) for shape in ((m, k), (n, k), (m, n)))
    gt, xt = g.t(), x.t()
    return {
        "forward": (lambda: F.linear(x, w), lambda: onednn(x, w)),
        "input_grad": (lambda: g @ w, lambda: onednn(g, w.t())),
        # oneDNN's faster orientation puts the wider feature count on the output rows (swinv2/layers/linear.py)
        "weight_grad": (lambda: gt @ x, (lambda: onednn(xt, gt)) if n > k else (lambda: onednn(gt, xt))),
    }


def seconds(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--img-size", type=int, default=256)
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()
    dtype = getattr(torch, args.dtype)
    results = []
    print(
        f"{'layer (tokens x in -> out)':36} "
        + "  ".join(f"{k + ' PyTorch / oneDNN':>26}" for k in ("forward", "input grad", "weight grad"))
    )
    with torch.no_grad():
        for name, m, k, n in layers(args.batch, args.img_size):
            row = {"layer": name, "tokens": m, "in": k, "out": n}
            for what, (mkl, dnn) in products(m, k, n, dtype).items():
                mkl(), dnn()  # warm-up
                samples = {"pytorch": [], "onednn": []}
                for _ in range(args.repeats):  # interleaved
                    samples["pytorch"] += seconds(mkl, 1)
                    samples["onednn"] += seconds(dnn, 1)
                row[what] = {lib: 2 * m * k * n / statistics.median(t) / 1e9 for lib, t in samples.items()}
            results.append(row)
            cells = "  ".join(
                f"{row[w]['pytorch']:>12.0f} / {row[w]['onednn']:<11.0f}"
                for w in ("forward", "input_grad", "weight_grad")
            )
            print(f"{name + f' ({m} x {k} -> {n})':36} {cells}")
    info = {"capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads()}
    print(json.dumps({**info, "dtype": args.dtype, "batch": args.batch, "img_size": args.img_size, "rows": results}))


if __name__ == "__main__":
    main()
