"""Ablation of SwinV2's two stability changes (paper Table 6), on Fashion-MNIST, over several seeds.

Three variants of one small model, trained with the same recipe, data order and seed: Swin V1's block
(pre-norm, scaled dot-product attention), + res-post-norm, + res-post-norm and scaled cosine attention
(SwinV2). All keep the log-spaced CPB, so only the norm placement and the attention differ. Each variant
runs at the recipe's learning rate and at 8x it, the second a stress test of the training stability the
changes are for; a run counts as diverged when its final training loss is not finite or its top-1 is at
chance level (<= 15% on 10 classes). Every cell is repeated per seed (initialisation and data order) and
reported as mean ± std; a step between variants counts only where it exceeds the two spreads together.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from itertools import pairwise
from pathlib import Path

from ...train import TrainRecipe, fit
from . import mean_std, seed_list, spread, verdict, write_results

MODEL = "swinv2_pico_window7_28"
VARIANTS = {
    "baseline (pre-norm, dot attention)": {"norm": "pre", "attention": "dot"},
    "+ res-post-norm": {"norm": "res_post", "attention": "dot"},
    "+ res-post-norm + cosine attention": {"norm": "res_post", "attention": "cosine"},
}
LR_SCALES = (1.0, 8.0)
# 4 epochs: 3 seeds x 6 runs fit the hour a study's default may take on 2 cores (5 epochs, one seed, took
# 18 minutes); the budget goes to seeds rather than epochs.
RECIPE = TrainRecipe(model=MODEL, epochs=4, batch_size=128, amp="none")  # fp32 on every machine
QUICK = {"train_limit": 4_000, "epochs": 1, "val_limit": 1_000}
CHANCE = 15.0


def run(output: str | Path, quick: bool = False, progress: bool = False, seeds: int = 3) -> dict:
    """Train every variant at every learning-rate scale, once per seed; write results.json, .md and .png."""
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    recipe = replace(RECIPE, **QUICK) if quick else RECIPE
    rows = []
    for seed in seed_list(seeds):
        for scale in LR_SCALES:
            for i, (variant, overrides) in enumerate(VARIANTS.items()):
                run_dir = out / f"variant{i}_lr{scale:g}x_seed{seed}"
                changes = dict(model_overrides=overrides, lr=recipe.lr * scale, seed=seed, output=str(run_dir))
                summary = fit(replace(recipe, **changes), progress=progress)
                loss = summary["final_train_loss"]
                diverged = not math.isfinite(loss) or summary["top1"] <= CHANCE
                rows.append(
                    {"variant": variant, "lr_scale": scale, "seed": seed, "top1": summary["top1"]}
                    | {"final_train_loss": loss, "diverged": diverged}
                )
                print(f"{variant:<36} lr x{scale:g} seed {seed}  top-1 {summary['top1']:.2f}  diverged {diverged}")
    results = {
        "model": MODEL,
        "epochs": recipe.epochs,
        "train_images": recipe.train_limit or 60_000,
        "base_lr_per_512": recipe.lr,
        "seeds": seeds,
        "quick": quick,
        "rows": rows,
        "cells": cells(rows),
        "seconds": time.perf_counter() - start,
    }
    write_results(out, results, table(results), plot, "ablation.png")
    return results


def cells(rows: list[dict]) -> list[dict]:
    """Per variant and learning rate: top-1 over the seeds and how many of them diverged."""
    out = []
    for variant in VARIANTS:
        for scale in LR_SCALES:
            mine = [r for r in rows if r["variant"] == variant and r["lr_scale"] == scale]
            out.append(
                {"variant": variant, "lr_scale": scale, "top1": spread([r["top1"] for r in mine])}
                | {"diverged": sum(r["diverged"] for r in mine)}
            )
    return out


def _cell(r: dict, variant: str, scale: float) -> dict:
    return next(c for c in r["cells"] if c["variant"] == variant and c["lr_scale"] == scale)


def table(r: dict) -> str:
    scales = sorted({c["lr_scale"] for c in r["cells"]})
    lines = [
        f"{r['model']}, {r['epochs']} epochs on {r['train_images']:,} Fashion-MNIST images, {r['seeds']} seed(s) "
        f"per cell (mean ± std); top-1 on the test set (lr {r['base_lr_per_512']:g} per 512 images x the scale)",
        "",
        "| variant | " + " | ".join(f"top-1, lr x{s:g}" for s in scales) + " |",
        "|---|" + "---|" * len(scales),
    ]
    variants = list(dict.fromkeys(c["variant"] for c in r["cells"]))
    for variant in variants:
        texts = []
        for s in scales:
            cell = _cell(r, variant, s)
            gone = f" ({cell['diverged']}/{cell['top1']['n']} diverged)" if cell["diverged"] else ""
            texts.append(mean_std(cell["top1"]) + gone)
        lines.append(f"| {variant} | " + " | ".join(texts) + " |")
    lines += ["", "Each step against the variant before it (a difference only beyond both spreads):", ""]
    for before, after in pairwise(variants):
        for s in scales:
            a, b = _cell(r, after, s)["top1"], _cell(r, before, s)["top1"]
            lines.append(
                f"- {after} vs {before.split(' (')[0]}, lr x{s:g}: {a['mean'] - b['mean']:+.2f} ({verdict(a, b)})"
            )
    lines += ["", f"{r['seconds'] / 60:.1f} minutes."]
    return "\n".join(lines) + "\n"


def plot(r: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = list(dict.fromkeys(c["variant"] for c in r["cells"]))
    scales = sorted({c["lr_scale"] for c in r["cells"]})
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(scales)
    for j, s in enumerate(scales):
        tops = [_cell(r, v, s)["top1"] for v in variants]
        xs = [i + j * width for i in range(len(variants))]
        bars = ax.bar(
            xs, [t["mean"] for t in tops], width, yerr=[t["std"] for t in tops], capsize=3, label=f"lr x{s:g}"
        )
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
        for x, t in zip(xs, tops):  # every seed's run, over its bar
            ax.plot([x] * t["n"], t["values"], "k.", markersize=3)
    ax.set_xticks([i + width * (len(scales) - 1) / 2 for i in range(len(variants))])
    ax.set_xticklabels([v.replace(" (", "\n(") for v in variants], fontsize=8)
    low = min(row["top1"] for row in r["rows"])
    ax.set_ylim(max(0.0, low - 5), 100)
    ax.set_ylabel("top-1 (%)")
    ax.set_title(
        f"Res-post-norm and cosine attention (paper Table 6 in miniature), {r['seeds']} seed(s), mean ± std", fontsize=9
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
