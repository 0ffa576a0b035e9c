"""Ablation of SwinV2's two stability changes (paper Table 6), on Fashion-MNIST.

Three variants of one small model, trained with the same recipe, data order and seed: Swin V1's block
(pre-norm, scaled dot-product attention), + res-post-norm, + res-post-norm and scaled cosine attention
(SwinV2). All keep the log-spaced CPB, so only the norm placement and the attention differ. Each variant
runs at the recipe's learning rate and at 8x it, the second a stress test of the training stability the
changes are for; a run counts as diverged when its final training loss is not finite or its top-1 is at
chance level (<= 15% on 10 classes).
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path

from ...train import TrainRecipe, fit
from . import write_results

MODEL = "swinv2_pico_window7_28"
VARIANTS = {
    "baseline (pre-norm, dot attention)": {"norm": "pre", "attention": "dot"},
    "+ res-post-norm": {"norm": "res_post", "attention": "dot"},
    "+ res-post-norm + cosine attention": {"norm": "res_post", "attention": "cosine"},
}
LR_SCALES = (1.0, 8.0)
RECIPE = TrainRecipe(model=MODEL, epochs=5, batch_size=128, amp="none")  # fp32 on every machine
QUICK = {"train_limit": 10_000, "epochs": 1, "val_limit": 2_000}
CHANCE = 15.0


def run(output: str | Path, quick: bool = False, progress: bool = False) -> dict:
    """Train every variant at every learning-rate scale; write results.json, .md and .png."""
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    recipe = replace(RECIPE, **QUICK) if quick else RECIPE
    rows = []
    for scale in LR_SCALES:
        for i, (variant, overrides) in enumerate(VARIANTS.items()):
            run_dir = out / f"variant{i}_lr{scale:g}x"
            summary = fit(
                replace(recipe, model_overrides=overrides, lr=recipe.lr * scale, output=str(run_dir)),
                progress=progress,
            )
            loss = summary["final_train_loss"]
            diverged = not math.isfinite(loss) or summary["top1"] <= CHANCE
            rows.append(
                {"variant": variant, "lr_scale": scale, "top1": summary["top1"], "final_train_loss": loss}
                | {"diverged": diverged}
            )
            print(f"{variant:<36} lr x{scale:g}  top-1 {summary['top1']:.2f}  diverged {diverged}", flush=True)
    results = {
        "model": MODEL,
        "epochs": recipe.epochs,
        "train_images": recipe.train_limit or 60_000,
        "base_lr_per_512": recipe.lr,
        "quick": quick,
        "rows": rows,
        "seconds": time.perf_counter() - start,
    }
    write_results(out, results, table(results), plot, "ablation.png")
    return results


def table(r: dict) -> str:
    scales = sorted({row["lr_scale"] for row in r["rows"]})
    lines = [
        f"{r['model']}, {r['epochs']} epochs on {r['train_images']:,} Fashion-MNIST images, same seed and data "
        f"order; top-1 on the test set (lr {r['base_lr_per_512']:g} per 512 images x the scale)",
        "",
        "| variant | " + " | ".join(f"top-1, lr x{s:g}" for s in scales) + " |",
        "|---|" + "---|" * len(scales),
    ]
    for variant in dict.fromkeys(row["variant"] for row in r["rows"]):
        cells = []
        for s in scales:
            row = next(x for x in r["rows"] if x["variant"] == variant and x["lr_scale"] == s)
            cells.append(f"{row['top1']:.2f}" + (" (diverged)" if row["diverged"] else ""))
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    lines += ["", f"{r['seconds'] / 60:.1f} minutes."]
    return "\n".join(lines) + "\n"


def plot(r: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = list(dict.fromkeys(row["variant"] for row in r["rows"]))
    scales = sorted({row["lr_scale"] for row in r["rows"]})
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(scales)
    for j, s in enumerate(scales):
        tops = [next(x["top1"] for x in r["rows"] if x["variant"] == v and x["lr_scale"] == s) for v in variants]
        bars = ax.bar([i + j * width for i in range(len(variants))], tops, width, label=f"lr x{s:g}")
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set_xticks([i + width * (len(scales) - 1) / 2 for i in range(len(variants))])
    ax.set_xticklabels([v.replace(" (", "\n(") for v in variants], fontsize=8)
    low = min(row["top1"] for row in r["rows"])
    ax.set_ylim(max(0.0, low - 5), 100)
    ax.set_ylabel("top-1 (%)")
    ax.set_title("Res-post-norm and cosine attention (paper Table 6 in miniature)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
