"""Side-by-side speed benchmark: this project against timm, Hugging Face and torchvision's SwinV2.

All contenders live in one process and run interleaved, round after round, in a rotating order; each
figure is the median over rounds. A noisy, shared machine then slows every contender alike, and the
ratios (``x timm``) are what to read. Peers get random weights (default init makes SwinV2 blocks
identities); each peer's logits are checked against this project's model loaded with that peer's
weights through the converter, so the table also proves the outputs agree.

``swinv2 bench`` prints the table and ends with one JSON line. timm and transformers are optional
(``pip install swinv2[bench]``); a missing peer is reported and skipped.
"""

from __future__ import annotations

import copy
import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.linear import linear_weights, use_onednn
from ..models.config import SwinV2Config
from ..models.flops import count_gflops
from ..pretrained.factory import create_model
from ..weights.convert import convert_state_dict, to_official

PEERS = ("timm", "hf", "torchvision")
COMPILED = "swinv2+compile"  # this project's model under torch.compile: an opt-in contender
MODES = ("infer_fp32", "infer_bf16", "train_fp32", "train_bf16")
# Contenders holding this project's random weights (HF and torchvision draw their own): bf16 agreement,
# which depends on the weights' logit margins, compares between these only.
SAME_WEIGHTS = ("swinv2", "timm")


@torch.no_grad()
def randomize_parameters(module: nn.Module, seed: int = 0) -> nn.Module:
    """Give every parameter a random, non-default value (logit scales in ln 2 .. ln 200, norms near 1)."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in module.named_parameters():
        r = torch.randn(p.shape, generator=gen)
        if name.endswith("logit_scale"):
            p.copy_(torch.empty(p.shape).uniform_(math.log(2), math.log(200), generator=gen))
        elif p.ndim == 1 and "norm" in name and name.endswith("weight"):
            p.copy_(1 + 0.2 * r)
        elif p.ndim == 1:
            p.copy_(0.1 * r)
        else:
            p.copy_(r / math.sqrt(p[0].numel()))
    return module


@dataclass
class Contender:
    name: str
    model: nn.Module
    logits: Callable[[nn.Module, torch.Tensor], torch.Tensor] = lambda m, x: m(x)
    max_diff: float | None = None  # logits vs this project's model on the same weights
    compile: bool = False
    results: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------ contenders
def _overrides(img_size: int, window_size: int | None) -> dict:
    """Config overrides of a benchmarked model: the image size, and the window where one is given."""
    return {"img_size": img_size} | ({} if window_size is None else {"window_size": window_size})


def _ours(model_name: str, img_size: int, window_size: int | None = None) -> nn.Module:
    model = create_model(model_name, drop_path_rate=0.0, **_overrides(img_size, window_size))
    return randomize_parameters(model).eval()


def _timm(ours: nn.Module, model_name: str, img_size: int, window_size: int | None = None) -> Contender:
    import timm
    from timm.models.swin_transformer_v2 import checkpoint_filter_fn

    model = timm.create_model(model_name, drop_path_rate=0.0, **_overrides(img_size, window_size)).eval()
    official = to_official(ours.state_dict())
    model.load_state_dict(checkpoint_filter_fn({"model": official}, model), strict=True)
    return Contender("timm", model)


def _hf(cfg: SwinV2Config, img_size: int) -> Contender:
    import transformers

    hf_cfg = transformers.Swinv2Config(
        image_size=img_size,
        patch_size=cfg.patch_size,
        embed_dim=cfg.embed_dim,
        depths=list(cfg.depths),
        num_heads=list(cfg.num_heads),
        window_size=cfg.window_size,
        pretrained_window_sizes=list(cfg.pretrained_window_sizes),
        num_labels=cfg.num_classes,
        drop_path_rate=0.0,
    )
    model = randomize_parameters(transformers.Swinv2ForImageClassification(hf_cfg)).eval()
    return Contender("hf", model, lambda m, x: m(pixel_values=x).logits)


def _torchvision(cfg: SwinV2Config) -> Contender:
    from torchvision.models import swin_transformer as tv

    model = tv._swin_transformer(
        patch_size=[cfg.patch_size] * 2,
        embed_dim=cfg.embed_dim,
        depths=list(cfg.depths),
        num_heads=list(cfg.num_heads),
        window_size=[cfg.window_size] * 2,
        stochastic_depth_prob=0.0,
        weights=None,
        progress=False,
        block=tv.SwinTransformerBlockV2,
        downsample_layer=tv.PatchMergingV2,
        num_classes=cfg.num_classes,
    )
    return Contender("torchvision", randomize_parameters(model).eval())


def build_contenders(
    model_name: str, img_size: int, peers: tuple[str, ...] = PEERS, window_size: int | None = None
) -> list[Contender]:
    """This project's model and each available peer, all in eval mode with random weights; ``window_size``
    replaces the registry entry's window in every contender."""
    ours = Contender("swinv2", _ours(model_name, img_size, window_size))
    cfg = ours.model.cfg
    builders = {
        "compiled": lambda: Contender(COMPILED, ours.model, compile=True),
        "timm": lambda: _timm(ours.model, model_name, img_size, window_size),
        "hf": lambda: _hf(cfg, img_size),
        "torchvision": lambda: _torchvision(cfg),
    }
    contenders = [ours]
    for name in peers:
        if name not in builders:
            raise ValueError(f"unknown peer {name!r}; expected some of {sorted(builders)}")
        try:
            contenders.append(builders[name]())
        except ImportError as err:
            print(f"skipping {name}: {err}")
    return contenders


@torch.no_grad()
def check_outputs(
    contenders: list[Contender], model_name: str, img_size: int, batch: int = 2, window_size: int | None = None
) -> None:
    """Each peer's logits against this project's fused model loaded with the peer's weights (fp32)."""
    x = torch.randn(batch, 3, img_size, img_size, generator=torch.Generator().manual_seed(1))
    for c in contenders[1:]:
        if c.compile:
            c.max_diff = (torch.compile(c.model)(x) - contenders[0].model(x)).abs().max().item()
            continue
        # torchvision pads a window larger than the map instead of clipping it, and attends to the padding
        compat = {"clip_windows": False, "mask_padding": False} if c.name == "torchvision" else {}
        mine = create_model(model_name, drop_path_rate=0.0, **_overrides(img_size, window_size), **compat).eval()
        mine.load_state_dict(convert_state_dict(c.model.state_dict()), strict=True)
        c.max_diff = (c.logits(c.model, x) - mine(x)).abs().max().item()


# ------------------------------------------------------------------------------------------- measuring
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _runner(c: Contender, mode: str, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """A closure doing one inference batch or one training step (forward, backward, AdamW) of ``mode``."""
    bf16 = mode.endswith("bf16")
    if mode.startswith("infer"):
        model = copy.deepcopy(c.model).to(torch.bfloat16) if bf16 else c.model
        model = torch.compile(model) if c.compile else model
        xin = x.to(torch.bfloat16) if bf16 else x

        def infer() -> None:
            with torch.inference_mode():
                c.logits(model, xin)

        return infer
    model = copy.deepcopy(c.model).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6, fused=True)
    model = torch.compile(model) if c.compile else model

    def step() -> None:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(c.logits(model, x).float(), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)  # each step frees the gradients it made: see peak_memory

    return step


def _time(fn: Callable[[], None], iters: int, device: torch.device, best: bool = False) -> float:
    """Median seconds of ``iters`` calls (``best``: the fastest call)."""
    times = []
    for _ in range(iters):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return min(times) if best else statistics.median(times)


def peak_memory(fn: Callable[[], None], device: torch.device) -> int:
    """Peak bytes allocated by PyTorch during ``fn`` above what was live before it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    # Every allocation and free is a "[memory]" record with its time and signed size; replayed in time order
    # they give the live-bytes curve (per-op net usage would apply an op's frees before its children's
    # allocations and lose temporaries freed inside it). Frees of blocks allocated before profiling are
    # not recorded: ``fn`` must free only what it allocated, as the benchmark's runners do.
    records = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = peak = 0
    for record in sorted(records, key=lambda e: e.start_ns()):
        live += record.nbytes()
        peak = max(peak, live)
    return peak


def _peak_mb(fn: Callable[[], None], device: torch.device, compiled: bool) -> float | None:
    """Peak MiB of one call; None where it cannot be seen (compiled code allocates outside the profiler)."""
    if compiled and device.type != "cuda":
        return None
    return peak_memory(fn, device) / 2**20


def matmul_peak(
    device: torch.device, dtype: torch.dtype = torch.float32, n: int | None = None, iters: int = 10
) -> float:
    """Measured FLOP/s of a square matrix product: the roof the model's MFU is quoted against.

    The side grows from 256 until the slower library takes 50 ms or the side reaches 2048 on a CPU (8192
    on a GPU, which a smaller product does not fill), and fewer calls are timed where each is slow: the
    probe stays short where the dtype is emulated (bf16 on CPUs without AVX512_BF16 or AMX runs tens of
    times slower than fp32) and fills the machine where it is fast.
    On a CPU the faster of PyTorch's two libraries counts: ``a @ b`` (MKL / OpenBLAS) and oneDNN, which
    this project's linear layers call; which one wins depends on the CPU (docs/results.md)."""
    largest = n or (2048 if device.type == "cpu" else 8192)
    side = n or min(256, largest)
    while True:
        products = _square_products(device, dtype, side)
        with torch.no_grad():
            seconds = max(_time(product, 1, device) for product in products)  # the first call: warm-up too
        if side >= largest or seconds >= 0.05:
            break
        side *= 2
    calls = max(3, min(iters, int(0.5 / max(seconds, 1e-6))))  # about half a second per library at most
    with torch.no_grad():  # the fastest call: a roof is what the machine can do (a shared one varies)
        return max(2 * side**3 / _time(product, calls, device, best=True) for product in products)


def _square_products(device: torch.device, dtype: torch.dtype, side: int) -> list[Callable[[], object]]:
    a = torch.randn(side, side, device=device, dtype=dtype)
    b = torch.randn(side, side, device=device, dtype=dtype)
    products = [lambda: a @ b]
    if device.type == "cpu":
        weight = b.t().contiguous()
        products.append(lambda: _on_onednn(a, weight))
    return products


def _on_onednn(a: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    with use_onednn(True):
        return linear_weights(a, weight, None)


def benchmark(
    model_name: str = "swinv2_tiny_window8_256",
    img_size: int = 256,
    batch: int = 8,
    peers: tuple[str, ...] = PEERS,
    modes: tuple[str, ...] = MODES,
    rounds: int = 5,
    iters: int = 2,
    device: str = "cpu",
    window_size: int | None = None,
    agreement_inputs: int = 256,
) -> dict:
    """Throughput (img/s), peak memory and MFU of every contender in every mode, the throughput at 100% of
    the matmul peak (``roof_img_per_s``), and with bf16 inference its top-1 agreement with fp32 on
    ``agreement_inputs`` random inputs; see the module docstring."""
    for mode in modes:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected some of {MODES}")
    dev = torch.device(device)
    torch.manual_seed(0)
    contenders = build_contenders(model_name, img_size, peers, window_size)
    check_outputs(contenders, model_name, img_size, window_size=window_size)
    for c in contenders:
        c.model.to(dev)
    x = torch.randn(batch, 3, img_size, img_size, device=dev)
    y = torch.randint(0, contenders[0].model.cfg.num_classes, (batch,), device=dev)
    runners = {(c.name, m): _runner(c, m, x, y) for c in contenders for m in modes}
    first_call = {}
    for key, fn in runners.items():  # warm-up: allocator, kernels, lazy initialisation, compilation
        start = time.perf_counter()
        fn()
        first_call[key] = time.perf_counter() - start
    samples: dict[tuple, list[float]] = {key: [] for key in runners}
    for r in range(rounds):
        order = contenders[r % len(contenders) :] + contenders[: r % len(contenders)]
        for mode in modes:
            for c in order:
                samples[(c.name, mode)].append(batch / _time(runners[(c.name, mode)], iters, dev))
    flops = 2e9 * count_gflops(contenders[0].model.cfg, img_size)
    dtypes = {"bfloat16" if mode.endswith("bf16") else "float32" for mode in modes}  # bf16 only where asked
    peaks = {dtype: matmul_peak(dev, getattr(torch, dtype)) for dtype in sorted(dtypes, reverse=True)}
    rows = []
    for (name, mode), values in samples.items():
        throughput = statistics.median(values)
        work = flops * (3 if mode.startswith("train") else 1)
        dtype = "bfloat16" if mode.endswith("bf16") else "float32"
        rows.append(
            {
                "contender": name,
                "mode": mode,
                "img_per_s": throughput,
                "peak_mb": _peak_mb(runners[(name, mode)], dev, compiled=name == COMPILED),
                "mfu": throughput * work / peaks[dtype],
                "roof_img_per_s": peaks[dtype] / work,
                "first_call_s": first_call[(name, mode)],
            }
        )
    _add_ratios(rows)
    diffs = {c.name: c.max_diff for c in contenders[1:]}
    agreement = None
    if "infer_bf16" in modes:
        n = agreement_inputs
        agreement = {c.name: bf16_agreement(c, img_size, dev, n) for c in contenders if c.name in SAME_WEIGHTS}
        agreement[INPUT_ROUNDING] = input_rounding_agreement(contenders[0], img_size, dev, n)
    return {
        "model": model_name,
        "img_size": img_size,
        "window_size": contenders[0].model.cfg.window_size,
        "batch": batch,
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "rounds": rounds,
        "gflops_per_img": flops / 1e9,
        "matmul_peak_gflops": {k: v / 1e9 for k, v in peaks.items()},
        "max_abs_diff_vs_swinv2": diffs,
        "bf16_top1_agreement": agreement,
        "agreement_inputs": agreement_inputs if agreement else None,
        "rows": rows,
    }


# Key of the agreement yardstick: this project's fp32 model fed inputs rounded to bf16, nothing else changed.
INPUT_ROUNDING = "input_rounding_only"


@torch.no_grad()
def bf16_agreement(c: Contender, img_size: int, device: torch.device, n: int = 256) -> float:
    """Fraction of ``n`` random inputs whose bf16 top-1 class (weights and inputs cast) is the fp32 one."""
    x = _agreement_inputs(n, img_size, device)
    low = copy.deepcopy(c.model).to(torch.bfloat16)
    return _agree(_top1(c, c.model, x), _top1(c, low, x.to(torch.bfloat16)))


@torch.no_grad()
def input_rounding_agreement(c: Contender, img_size: int, device: torch.device, n: int = 256) -> float:
    """The same fraction for the fp32 model when only its inputs are rounded to bf16: the yardstick for
    :func:`bf16_agreement`. With random weights the top-1 margins are so small that this one rounding
    (relative error <= 2^-9) already flips a few percent of the classes; a full bf16 path adds roundings
    at every layer. It is not a strict ceiling (other roundings can flip an input back), and with n
    inputs the 95% interval of each fraction is about +-2 sqrt(p (1 - p) / n)."""
    x = _agreement_inputs(n, img_size, device)
    return _agree(_top1(c, c.model, x), _top1(c, c.model, x.to(torch.bfloat16).float()))


def _agreement_inputs(n: int, img_size: int, device: torch.device) -> torch.Tensor:
    return torch.randn(n, 3, img_size, img_size, generator=torch.Generator().manual_seed(2)).to(device)


def _top1(c: Contender, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([c.logits(model, part).argmax(1) for part in x.split(8)])


def _agree(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a == b).float().mean().item()


def _add_ratios(rows: list[dict]) -> None:
    """``x_timm``: throughput over timm's in the same mode; bf16 inference also over timm's fp32."""
    timm = {r["mode"]: r["img_per_s"] for r in rows if r["contender"] == "timm"}
    for r in rows:
        base = timm.get(r["mode"])
        r["x_timm"] = r["img_per_s"] / base if base else None
        if r["mode"] == "infer_bf16" and timm.get("infer_fp32"):
            r["x_timm_fp32"] = r["img_per_s"] / timm["infer_fp32"]


def format_table(result: dict) -> str:
    lines = [
        f"{result['model']} @ {result['img_size']} px, window {result.get('window_size')}, batch {result['batch']}, "
        f"{result.get('device_name', result['device'])} ({result['threads']} threads), "
        f"median of {result['rounds']} interleaved rounds",
        "matmul peak: " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in result["matmul_peak_gflops"].items()),
        "max |logits diff| vs swinv2 on the same weights: "
        + ", ".join(f"{k} {v:.2e}" for k, v in result["max_abs_diff_vs_swinv2"].items() if v is not None),
    ]
    if result.get("bf16_top1_agreement"):
        n = result["agreement_inputs"]
        lines.append(
            f"bf16 vs fp32 top-1 agreement on {n} random inputs: "
            + ", ".join(f"{k} {100 * v:.1f}% ({round(v * n)}/{n})" for k, v in result["bf16_top1_agreement"].items())
        )
    lines += [
        f"{'mode':<11} {'contender':<15} {'img/s':>8} {'x timm':>7} {'peak MB':>8} {'MFU':>6} {'roof img/s':>10}",
    ]
    for r in sorted(result["rows"], key=lambda r: (MODES.index(r["mode"]), r["contender"])):
        ratio = f"{r['x_timm']:.2f}" if r["x_timm"] else "-"
        peak = "-" if r["peak_mb"] is None else f"{r['peak_mb']:.0f}"
        lines.append(
            f"{r['mode']:<11} {r['contender']:<15} {r['img_per_s']:>8.2f} {ratio:>7} {peak:>8} "
            f"{100 * r['mfu']:>5.1f}% {r['roof_img_per_s']:>10.2f}"
        )
    lines.append("roof: the throughput at 100% of the matmul peak, every FLOP in a matrix product at full speed")
    return "\n".join(lines)


def main(**kwargs) -> dict:
    result = benchmark(**kwargs)
    print(format_table(result))
    print(json.dumps(result))
    return result
