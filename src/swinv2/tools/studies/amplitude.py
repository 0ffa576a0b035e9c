"""Activation amplitude along depth, pre-norm vs res-post-norm (paper Figure 2), on Fashion-MNIST.

A deep, narrow SwinV2 (24 blocks) is trained for a fixed number of steps twice, from the same seed and
on the same batches, once with V1's pre-norm (``x + f(norm(x))``) and once with V2's res-post-norm
(``x + norm(f(x))``); attention (cosine) and position bias (Log-CPB) stay the same, so the norm's
placement is the only difference. The amplitude of a block is the RMS of its output, the main branch,
averaged over fixed test images. With pre-norm every block adds an un-normalised residual to the main
branch, which grows with depth; with res-post-norm each addition is normalised first.
``ratio`` is the largest over the smallest per-block amplitude. Each variant trains once per seed; the
curves and ratios are reported as mean ± std over the seeds.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from ...data.fashion_mnist import MEAN, STD, load_fashion_mnist
from ...models.swinv2 import SwinV2Block
from ...pretrained.factory import create_model
from ...train import TrainRecipe, fit
from . import mean_std, seed_list, spread, verdict, write_results

MODEL = "swinv2_pico_window7_28"
DEEP = {"depths": (2, 2, 20), "num_heads": (1, 2, 4)}  # 24 blocks; stage 3 is where depth accumulates
VARIANTS = {"pre_norm": "pre", "res_post_norm": "res_post"}
# 1,500 steps of 64 images (two epochs of 48,000); --quick: 150 steps.
RECIPE = TrainRecipe(
    model=MODEL, model_overrides=DEEP, train_limit=48_000, epochs=2, batch_size=64, val_limit=2000, amp="none"
)
QUICK = {"train_limit": 4_800, "epochs": 2, "val_limit": 500}
PROBE_IMAGES = 512


def block_amplitudes(model: nn.Module, images: torch.Tensor) -> list[float]:
    """RMS of every block's output over ``images`` (the main branch after each residual update)."""
    blocks = [m for m in model.modules() if isinstance(m, SwinV2Block)]
    sums = [0.0] * len(blocks)

    def hook(i: int):
        def record(_module, _args, out: torch.Tensor) -> None:
            sums[i] += out.double().pow(2).mean().item() * out.shape[0]

        return record

    handles = [b.register_forward_hook(hook(i)) for i, b in enumerate(blocks)]
    try:
        with torch.no_grad():
            for batch in images.split(128):
                model.eval()(batch.expand(-1, model.cfg.in_chans, -1, -1))  # grey to RGB, as in training
    finally:
        for h in handles:
            h.remove()
    return [(s / len(images)) ** 0.5 for s in sums]


def probe_images(n: int | None = None) -> torch.Tensor:
    """The first ``n`` (default ``PROBE_IMAGES``) test images, normalised as in training: ``(n, 1, 28, 28)``."""
    n = n or PROBE_IMAGES
    images, _ = load_fashion_mnist("test")
    x = images[:n].float().div(255).unsqueeze(1)
    return (x - MEAN[0]) / STD[0]


def ratio(values: list[float]) -> float:
    return max(values) / min(values)


def run(output: str | Path, quick: bool = False, progress: bool = False, seeds: int = 3) -> dict:
    """Train both variants per seed, measure amplitudes before and after; write results.json, .md and .png."""
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    recipe = replace(RECIPE, **QUICK) if quick else RECIPE
    images = probe_images()
    per_seed: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    for seed in seed_list(seeds):
        for name, norm in VARIANTS.items():
            per_seed[name].append(
                _measure(replace(recipe, seed=seed), norm, images, out / f"{name}_seed{seed}", progress)
            )
    variants = {name: _summarise(runs) for name, runs in per_seed.items()}
    steps = -(-recipe.train_limit // recipe.batch_size) * recipe.epochs
    results = {
        "model": MODEL,
        "overrides": {k: list(v) for k, v in DEEP.items()},
        "steps": steps,
        "batch_size": recipe.batch_size,
        "probe_images": len(images),
        "seeds": seeds,
        "quick": quick,
        "prenorm_ratio": variants["pre_norm"]["ratio"]["mean"],
        "respostnorm_ratio": variants["res_post_norm"]["ratio"]["mean"],
        "variants": variants,
        "seconds": time.perf_counter() - start,
    }
    results["ratio_of_ratios"] = results["prenorm_ratio"] / results["respostnorm_ratio"]
    results["verdict"] = verdict(variants["pre_norm"]["ratio"], variants["res_post_norm"]["ratio"])
    write_results(out, results, table(results), plot, "amplitude.png")
    return results


def _measure(recipe: TrainRecipe, norm: str, images: torch.Tensor, run_dir: Path, progress: bool) -> dict:
    """One variant, one seed: amplitudes at initialisation and after training, and its top-1."""
    overrides = {**DEEP, "norm": norm}
    torch.manual_seed(recipe.seed)
    initial = block_amplitudes(create_model(MODEL, **overrides), images)
    summary = fit(replace(recipe, model_overrides=overrides, output=str(run_dir)), progress=progress)
    trained = create_model(MODEL, pretrained=run_dir / "model.safetensors", strict=True, **overrides)
    return {
        "seed": recipe.seed,
        "amplitudes": block_amplitudes(trained, images),
        "initial": initial,
        "top1": summary["top1"],
    }


def _summarise(runs: list[dict]) -> dict:
    """A variant over its seeds: each block's amplitude, the ratios and top-1 as spreads, and every run."""
    return {
        "amplitudes": [spread(values) for values in zip(*(r["amplitudes"] for r in runs))],
        "initial_amplitudes": [spread(values) for values in zip(*(r["initial"] for r in runs))],
        "ratio": spread([ratio(r["amplitudes"]) for r in runs]),
        "initial_ratio": spread([ratio(r["initial"]) for r in runs]),
        "last_block": spread([r["amplitudes"][-1] for r in runs]),
        "top1": spread([r["top1"] for r in runs]),
        "runs": runs,
    }


def table(r: dict) -> str:
    lines = [
        f"{r['model']} with depths {tuple(r['overrides']['depths'])}, {r['steps']} steps of {r['batch_size']} "
        f"Fashion-MNIST images, {r['seeds']} seed(s) (mean ± std); block output RMS over {r['probe_images']} "
        "test images",
        "",
        "| variant | largest / smallest block amplitude | at initialisation | last block | top-1 |",
        "|---|---|---|---|---|",
    ]
    for name, v in r["variants"].items():
        lines.append(
            f"| {name.replace('_', '-')} | **{mean_std(v['ratio'], 1)}x** | {mean_std(v['initial_ratio'], 1)}x | "
            f"{mean_std(v['last_block'])} | {mean_std(v['top1'])} |"
        )
    lines += [
        "",
        f"pre-norm ratio / res-post-norm ratio (of the means): **{r['ratio_of_ratios']:.1f}x**, pre-norm "
        f"{r['verdict']}; {r['seconds'] / 60:.1f} minutes.",
    ]
    return "\n".join(lines) + "\n"


def plot(r: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for (name, v), color in zip(r["variants"].items(), ("tab:red", "tab:blue")):
        blocks = list(range(1, len(v["amplitudes"]) + 1))
        label = name.replace("_", "-")
        mean = [a["mean"] for a in v["amplitudes"]]
        low = [a["mean"] - a["std"] for a in v["amplitudes"]]
        high = [a["mean"] + a["std"] for a in v["amplitudes"]]
        ax.plot(blocks, mean, "o-", color=color, label=f"{label}, after {r['steps']} steps")
        ax.fill_between(blocks, low, high, color=color, alpha=0.25, linewidth=0)  # ± std over the seeds
        ax.plot(
            blocks, [a["mean"] for a in v["initial_amplitudes"]], ":", color=color, label=f"{label}, at initialisation"
        )
    ax.set_yscale("log")
    ax.set_xlabel("block (stages 1-3)")
    ax.set_ylabel("activation amplitude (RMS of block output)")
    ax.set_title(
        f"Main-branch amplitude along depth (paper Figure 2 in miniature), {r['seeds']} seed(s): mean ± std", fontsize=9
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
