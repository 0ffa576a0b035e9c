"""Which attention route is fastest for the whole model on this device? One model, five routes, interleaved.

The fused path hands SDPA a kernel list (``sdpa_backends`` in ``swinv2/layers/attention.py``); with an
additive bias PyTorch then picks the memory-efficient kernel, or cuDNN's where it is enabled. The routes:

- ``shipped``: what the model does (cuDNN enabled only where ``cudnn_pays``);
- ``efficient``: cuDNN never enabled (flash, memory-efficient, math);
- ``cudnn``: cuDNN always enabled too, which PyTorch then prefers on Hopper;
- ``math``: SDPA's reference composite only;
- ``matrices``: no SDPA, explicit products with the bias added in place (the CPU's bf16 route).

Each route runs the same model (random weights) on the same batch in rounds, routes interleaved within a
round; the median img/s of each route is printed with its ratio to ``efficient`` and the max |diff| of
its logits against ``efficient`` (bf16 noise on random weights' large logits is ~0.5), then one JSON line.

    python benchmarks/attention_routes.py [--device cuda] [--model swinv2_tiny_window8_256] [--img-size 256]
        [--window-size W] [--batch 64] [--modes infer_bf16,infer_fp32,train_bf16] [--rounds 5] [--iters 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend

from swinv2 import create_model
from swinv2.layers import attention
from swinv2.tools.bench import randomize_parameters

SHIPPED_BACKENDS = attention.sdpa_backends
SHIPPED_PAYS = attention.sdpa_pays
ROUTES: dict[str, list[SDPBackend] | str | None] = {
    "shipped": "shipped",
    "efficient": attention.SDPA_BACKENDS,
    "cudnn": attention.SDPA_BACKENDS_CUDNN,
    "math": [SDPBackend.MATH],
    "matrices": None,  # sdpa_pays() answers False: explicit products
}


def use_route(route: str) -> None:
    """Point the attention module at ``route`` (module globals, read at every call)."""
    backends = ROUTES[route]
    attention.sdpa_pays = (lambda q, bias: False) if backends is None else SHIPPED_PAYS
    attention.sdpa_backends = SHIPPED_BACKENDS if not isinstance(backends, list) else (lambda q, k, v, bias: backends)


def forward(model: torch.nn.Module, mode: str, x: torch.Tensor) -> torch.Tensor:
    """The logits of ``mode``'s forward pass, without gradients (bf16: cast, or autocast in training)."""
    bf16 = mode.endswith("bf16")
    with torch.inference_mode():
        if mode.startswith("infer"):
            return model(x.to(torch.bfloat16) if bf16 else x).float()
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            return model(x).float()


def runner(model: torch.nn.Module, mode: str, x: torch.Tensor, y: torch.Tensor) -> Callable[[], object]:
    bf16 = mode.endswith("bf16")
    if mode.startswith("infer"):
        return lambda: forward(model, mode, x)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-9, fused=x.device.type == "cuda")

    def step() -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        F.cross_entropy(logits.float(), y).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def _timed(fn: Callable[[], object], iters: int, device: torch.device) -> float:
    times = []
    for _ in range(iters):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_mode(args: argparse.Namespace, mode: str, device: torch.device) -> dict:
    torch.manual_seed(0)
    extra = {"img_size": args.img_size} | ({"window_size": args.window_size} if args.window_size else {})
    model = randomize_parameters(create_model(args.model, drop_path_rate=0.0, **extra)).eval().to(device)
    if mode == "infer_bf16":
        model.to(torch.bfloat16)
    elif mode.startswith("train"):
        model.train()
    x = torch.randn(args.batch, 3, args.img_size, args.img_size, device=device)
    y = torch.randint(0, model.cfg.num_classes, (args.batch,), device=device)
    logits = {}
    for route in ROUTES:  # compared before any training step changes the weights
        use_route(route)
        logits[route] = forward(model, mode, x)
    fns = {route: runner(model, mode, x, y) for route in ROUTES}  # one model; training steps use lr 1e-9
    samples = {route: [] for route in ROUTES}
    for route, fn in fns.items():  # warm-up
        use_route(route)
        fn()
    for r in range(args.rounds):
        order = list(ROUTES)[r % len(ROUTES) :] + list(ROUTES)[: r % len(ROUTES)]
        for route in order:
            use_route(route)
            samples[route].append(args.batch / _timed(fns[route], args.iters, device))
    use_route("efficient")
    speed = {route: statistics.median(v) for route, v in samples.items()}
    return {
        route: {
            "img_per_s": speed[route],
            "vs_efficient": speed[route] / speed["efficient"],
            "max_abs_diff": (logits[route] - logits["efficient"]).abs().max().item(),
        }
        for route in ROUTES
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--model", default="swinv2_tiny_window8_256")
    p.add_argument("--img-size", type=int, default=256)
    p.add_argument("--window-size", type=int, default=None)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--modes", default="infer_bf16,infer_fp32,train_bf16")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--iters", type=int, default=3)
    args = p.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
    result = {"model": args.model, "img_size": args.img_size, "batch": args.batch, "modes": {}}
    for mode in args.modes.split(","):
        rows = measure_mode(args, mode, device)
        result["modes"][mode] = rows
        print(f"{args.model} {args.img_size}px batch {args.batch} {mode}")
        for route, row in rows.items():
            print(
                f"  {route:10s} {row['img_per_s']:9.1f} img/s  {row['vs_efficient']:5.2f}x  "
                f"max|diff| {row['max_abs_diff']:.2e}"
            )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
