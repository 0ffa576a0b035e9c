"""Does building the shift mask only for the windows that need it pay? SDPA of one shifted block, two ways.

In a shifted block only the windows of the last window row and column mix shift regions (15 of 64 at
SwinV2-T's stage 1); the others need the position bias alone. ``merged`` is what the model runs: one SDPA
call with a ``(nW * heads, N, N)`` bias, the table and the mask added once and cached. ``split`` gives the
interior windows the ``(heads, N, N)`` table and only the border windows a merged bias, in two calls whose
outputs are concatenated. The split is timed as if the windows were already ordered interior-first (a
real split would also reorder the partition), so it is the best case for splitting.

    python benchmarks/shift_mask.py [--device cuda] [--dtype bfloat16] [--batch 8] [--repeats 15]

Prints the median milliseconds of each, the cached bias elements of each, and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from swinv2.layers import attention_mask


def workload(batch: int, feat: int, window: int, heads: int, head_dim: int, dtype, device):
    n, nw = window * window, (feat // window) ** 2
    mask = attention_mask((feat, feat), (window, window), (window // 2, window // 2), (feat, feat), device=device)
    border = mask.flatten(1).ne(0).any(1)  # windows whose tokens come from more than one shift region
    order = torch.cat((border.logical_not().nonzero(), border.nonzero())).squeeze(1)
    mask = mask[order].to(dtype)  # interior windows first: the layout a split partition would produce
    inner = int((~border).sum())
    table = torch.randn(1, heads, n, n, device=device, dtype=dtype)
    merged = (table.unsqueeze(1) + mask[None, :, None]).reshape(1, nw * heads, n, n)
    edge = merged[:, inner * heads :].contiguous()
    q, k, v = (torch.randn(batch, nw * heads, n, head_dim, device=device, dtype=dtype) for _ in range(3))
    return q, k, v, table, merged, edge, inner * heads, heads


def one_call(q, k, v, table, merged, edge, inner, heads):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=merged, scale=1.0)


def split_calls(q, k, v, table, merged, edge, inner, heads):
    b, _, n, d = q.shape
    q_in, k_in, v_in = (t[:, :inner].reshape(-1, heads, n, d) for t in (q, k, v))  # (B * inner windows, h, N, d)
    interior = F.scaled_dot_product_attention(q_in, k_in, v_in, attn_mask=table, scale=1.0)
    rest = F.scaled_dot_product_attention(q[:, inner:], k[:, inner:], v[:, inner:], attn_mask=edge, scale=1.0)
    return torch.cat((interior.view(b, inner, n, d), rest), 1)


def measure(fn, args, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn(*args)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--feat", type=int, default=64, help="tokens per side (SwinV2-T stage 1 at 256 px)")
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--heads", type=int, default=3)
    parser.add_argument("--head-dim", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    device = torch.device(args.device)
    data = workload(args.batch, args.feat, args.window, args.heads, args.head_dim, getattr(torch, args.dtype), device)
    ways = {"merged": one_call, "split": split_calls}
    with torch.no_grad():
        max_diff = (one_call(*data) - split_calls(*data)).abs().max().item()
        times = {name: [] for name in ways}
        for _ in range(2):
            for fn in ways.values():
                fn(*data)
        for _ in range(args.repeats):  # interleaved
            for name, fn in ways.items():
                times[name].append(measure(fn, data, device))
    _, _, _, table, merged, edge, _, _ = data
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": args.dtype,
        "shape": {k: getattr(args, k) for k in ("batch", "feat", "window", "heads", "head_dim")},
        "ms": {name: 1000 * statistics.median(t) for name, t in times.items()},
        "bias_elements": {"merged": merged.numel(), "split": table.numel() + edge.numel()},
        "max_abs_diff": max_diff,
    }
    ms = result["ms"]
    print(
        f"{result['device']} {args.dtype}: merged {ms['merged']:.2f} ms, split {ms['split']:.2f} ms "
        f"(split / merged {ms['split'] / ms['merged']:.2f}); cached bias elements "
        f"{result['bias_elements']['merged']} vs {result['bias_elements']['split']}; max |diff| {max_diff:.1e}"
    )
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
