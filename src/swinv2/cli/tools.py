"""``swinv2 study | bench | bench-memory | bench-max-res | plan``: the tools of :mod:`swinv2.tools`."""

from __future__ import annotations

import argparse
import sys

from .common import (
    positive,
    positive_number,
)


def _study(args: argparse.Namespace) -> int:
    from ..tools.studies import ablation, amplitude, simmim, transfer

    study = {"amplitude": amplitude, "transfer": transfer, "ablation": ablation, "simmim": simmim}[args.name]
    study.run(args.output, quick=args.quick, progress=not args.no_progress, seeds=args.seeds)
    return 0


def _bench(args: argparse.Namespace) -> int:
    from ..tools.bench import main as run_benchmark

    run_benchmark(
        model_name=args.model,
        img_size=args.img_size,
        batch=args.batch_size,
        peers=tuple(p for p in args.peers.split(",") if p),
        modes=tuple(args.modes.split(",")),
        rounds=args.rounds,
        iters=args.iters,
        device=args.device,
        window_size=args.window_size,
        agreement_inputs=args.agreement_inputs,
    )
    return 0


def _bench_memory(args: argparse.Namespace) -> int:
    from ..tools.memory_bench import main as run_memory_benchmark
    from ..train.loop import resolve_device

    resolve_device(args.device)  # a missing CUDA device is named before any model is built

    run_memory_benchmark(
        model_name=args.model,
        img_size=args.img_size,
        batch=args.batch_size,
        peers=tuple(p for p in args.peers.split(",") if p),
        device=args.device,
    )
    return 0


def _bench_max_res(args: argparse.Namespace) -> int:
    from ..tools.max_resolution import main as run_search
    from ..tools.max_resolution import nothing_fitted
    from ..train.loop import resolve_device

    resolve_device(args.device)

    result = run_search(
        model_name=args.model,
        window_size=args.window_size,
        savers=tuple(args.savers.split(",")),
        device=args.device,
        capacity_gib=args.capacity_gib,
        step=args.step,
        start=args.start,
        budget_s=args.budget_s,
        isolate=args.isolate,
    )
    failure = nothing_fitted(result)
    if failure:
        print(f"swinv2 bench-max-res: error: {failure}", file=sys.stderr)
        return 1
    return 0


def _plan(args: argparse.Namespace) -> int:
    from ..tools.plan import main as run_plan

    run_plan(
        model_name=args.model,
        img_size=args.img_size,
        window_size=args.window_size,
        batch_size=args.batch_size,
        world_size=args.world_size,
        strategy=args.strategy,
        amp=args.amp,
        fit_gib=args.fit_gib,
    )
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("study", help="the paper's experiments in miniature, on Fashion-MNIST")
    p.add_argument(
        "name",
        choices=("simmim", "amplitude", "transfer", "ablation"),
        help="simmim: label efficiency of SimMIM pretraining; amplitude: activations along depth, pre-norm vs "
        "res-post-norm; transfer: position biases evaluated at larger windows; ablation: V1 block vs "
        "+ res-post-norm vs + cosine attention",
    )
    p.add_argument("--output", required=True, help="folder for the runs, results.json and results.md")
    p.add_argument(
        "--seeds",
        type=positive,
        default=3,
        help="runs per cell, seeds 0..K-1 (default 3); tables give mean ± std and call a difference one only "
        "beyond both spreads",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a short budget, under 5 minutes on 2 cores (amplitude: 150 steps, not 1,500; transfer: 1 epoch "
        "of 500 images, fine-tunes of 16, 50 test images; ablation: 1 epoch of 4,000; simmim: 2 pretraining "
        "epochs of 8,000, 6 fine-tuning epochs)",
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_study)

    p = sub.add_parser("bench", help="throughput, peak memory and MFU against timm, Hugging Face and torchvision")
    p.add_argument("--model", default="swinv2_tiny_window8_256", help="a timm-named registry entry")
    p.add_argument("--img-size", type=int, default=256)
    p.add_argument("--batch-size", type=positive, default=8)
    p.add_argument(
        "--peers",
        default="timm,hf,torchvision",
        help="comma-separated, of timm, hf, torchvision, compiled (ours under torch.compile); empty for ours only",
    )
    p.add_argument("--modes", default="infer_fp32,infer_bf16,train_fp32,train_bf16")
    p.add_argument("--rounds", type=positive, default=5, help="interleaved rounds (the median is reported)")
    p.add_argument("--iters", type=positive, default=2, help="timed calls per contender per round")
    p.add_argument("--window-size", type=int, help="replace the model's window in every contender")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--agreement-inputs", type=positive, default=256, help="random inputs of the bf16 top-1 agreement check"
    )
    p.set_defaults(func=_bench)

    p = sub.add_parser("bench-memory", help="peak memory of a high-resolution training step: savers vs timm")
    p.add_argument("--model", default="swinv2_tiny_window8_256", help="a timm-named registry entry")
    p.add_argument("--img-size", type=positive, default=1024)
    p.add_argument("--batch-size", type=positive, default=1)
    p.add_argument("--peers", default="timm", choices=("timm", ""), help="timm, or empty for this project's rows only")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_bench_memory)

    from ..tools.max_resolution import SAVER_SETS

    p = sub.add_parser("bench-max-res", help="largest image side one device trains at, plain and with savers")
    p.add_argument("--model", default="swinv2_base_window16_256", help="registry name")
    p.add_argument("--window-size", type=positive)
    p.add_argument("--savers", default=",".join(SAVER_SETS), help=f"comma-separated, of {', '.join(SAVER_SETS)}")
    p.add_argument("--device", default="cuda")
    p.add_argument("--capacity-gib", type=positive_number, help="memory a trial may use (default: the whole GPU)")
    p.add_argument("--step", type=positive, default=256, help="sides tried are multiples of this")
    p.add_argument("--start", type=positive, default=1024, help="first side tried")
    p.add_argument("--budget-s", type=positive_number, default=120.0, help="search time per saver set")
    p.add_argument(
        "--isolate",
        action=argparse.BooleanOptionalAction,
        help="one process per saver set (default: on a GPU, where running out of memory can spoil the context)",
    )
    p.set_defaults(func=_bench_max_res)

    from ..tools.plan import STRATEGIES

    p = sub.add_parser("plan", help="per-rank memory of a training job (params, grads, AdamW, activations)")
    p.add_argument("--model", required=True, help="registry name, e.g. swinv2_giant_window12to40_192to640")
    p.add_argument("--img-size", type=positive)
    p.add_argument("--window-size", type=positive)
    p.add_argument("--batch-size", type=positive, default=1, help="images per rank")
    p.add_argument("--world-size", type=positive, default=1)
    p.add_argument("--strategy", default="fsdp", choices=STRATEGIES)
    p.add_argument("--amp", default="bf16", choices=("none", "bf16", "fp16"))
    p.add_argument(
        "--fit-gib", type=positive_number, help="instead: the largest image side (multiple of 128) fitting this"
    )
    p.set_defaults(func=_plan)
