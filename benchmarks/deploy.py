"""Exported SwinV2 against the eager PyTorch model on this machine's CPU: onnxruntime, TorchScript and
torch.export programs, interleaved rounds, median seconds per batch.

    python benchmarks/deploy.py --model swinv2_tiny_window8_256 --batches 1 8 --rounds 7 --threads 2

Exports once per format (checked against PyTorch at batch 1 and 3 as `swinv2 export` does), then times
every contender once per round in a rotating order; prints a table and writes it as JSON with --json.
``onnx-dynamic`` is ``swinv2 export --format onnx --dynamic``: one file for every size, also checked in
onnxruntime at sizes it was not traced at (``--dynamic-sizes``, batches 1 to 3) and timed at the model's
own size beside the fixed-size file.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from swinv2 import create_model
from swinv2.deploy.export import export_model, onnx_session, parity_at


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="swinv2_tiny_window8_256")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--formats", default="onnx,torchscript,export")
    parser.add_argument("--dynamic-sizes", default="97x130,192x320,384x384", help="HxW,... for onnx-dynamic")
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_model(args.model).eval()
    with torch.no_grad():  # random weights everywhere (the default init leaves blocks identities)
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    folder = Path(tempfile.mkdtemp())
    runners, parity = {"eager": lambda x: model(x)}, {}
    for fmt in args.formats.split(","):
        dynamic = fmt == "onnx-dynamic"
        base = "onnx" if dynamic else fmt
        path = folder / (fmt + {"onnx": ".onnx", "torchscript": ".pt", "export": ".pt2"}[base])
        start = time.perf_counter()
        checks = export_model(model, base, path, dynamic=dynamic)
        parity[fmt] = {"export_s": time.perf_counter() - start, "checks": [vars(c) for c in checks]}
        print(f"{fmt}: exported in {parity[fmt]['export_s']:.1f} s; " + "; ".join(c.line() for c in checks))
        runners[fmt] = _runner(base, path, args.threads)
        if dynamic:
            sizes = [tuple(int(v) for v in hw.split("x")) for hw in args.dynamic_sizes.split(",")]
            extra = [parity_at(model, runners[fmt], b, 0, size) for size in sizes for b in (1, 2, 3)]
            parity[fmt]["checks"] += [vars(c) for c in extra]
            print(f"{fmt} at other sizes: " + "; ".join(c.line() for c in extra))
    h = model.cfg.img_size
    results = {}
    for batch in args.batches:
        x = torch.randn(batch, 3, h, h)
        times = {name: [] for name in runners}
        with torch.no_grad():
            for name in runners:  # warm-up
                runners[name](x)
            for r in range(args.rounds):
                names = list(runners)
                for name in names[r % len(names) :] + names[: r % len(names)]:
                    start = time.perf_counter()
                    runners[name](x)
                    times[name].append(time.perf_counter() - start)
        med = {name: statistics.median(t) for name, t in times.items()}
        results[batch] = {n: {"s": s, "img_per_s": batch / s, "vs_eager": med["eager"] / s} for n, s in med.items()}
        for name, row in results[batch].items():
            speed = f"{row['s'] * 1e3:8.1f} ms  {row['img_per_s']:7.1f} img/s  {row['vs_eager']:.2f}x eager"
            print(f"batch {batch:>3} {name:<12} {speed}")
    if args.json:
        out = {"model": args.model, "threads": args.threads, "rounds": args.rounds, "parity": parity}
        out["results"] = results
        Path(args.json).write_text(json.dumps(out, indent=2))


def _runner(fmt: str, path: Path, threads: int):
    if fmt == "onnx":
        session = onnx_session(path, threads)
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x.numpy()})[0]
    if fmt == "torchscript":
        module = torch.jit.load(str(path))
        return lambda x: module(x)
    program = torch.export.load(path).module()
    return lambda x: program(x)


if __name__ == "__main__":
    main()
