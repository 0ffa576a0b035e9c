"""Window and resolution transfer of the position bias (paper Table 1), on Fashion-MNIST, at the paper's
window ratios and over several seeds.

One small SwinV2 (res-post-norm, cosine attention, patch 2 so that stage 1 holds 32 x 32 tokens at 64 px)
is trained at 64 px with 8 x 8 windows, once per relative position bias and seed: V1's parameterised
table (bicubic-resized to a new window), the linear-spaced CPB and the log-spaced CPB. Each is then
tested at 96, 128 and 192 px with windows of 12, 16 and 24, the paper's 256 px / W8 -> 384 / W12,
512 / W16 and 768 / W24: every stage keeps its number of windows and only the relative offsets the bias
must produce are new (up to +-23 after training on +-7). Two columns per size, as Table 1: without
fine-tuning, and after a short fine-tune at that size. Cells are mean ± std over the seeds; a difference
counts only beyond both spreads. The learned bias along one axis, inside and outside the trained offsets,
explains what each method extrapolates (``bias_curves``).
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import torch

from ...deploy.infer import evaluate_classifier, load_classifier
from ...layers.position import ContinuousPositionBias, relative_coords_table, resize_position_table
from ...train import TrainRecipe, fit
from . import mean_std, seed_list, spread, verdict, write_results

MODEL = "swinv2_pico_window7_28"
PATCH = 2  # stage 1 of 32 x 32 tokens at 64 px; stage 3 of 8 x 8: no window is clipped at any test size
BASE = (64, 8)  # image side, window
TESTS = ((96, 12), (128, 16), (192, 24))
BIASES = {"table_bicubic": "table", "linear_cpb": "linear_cpb", "log_cpb": "log_cpb"}
# The hour of a study's default on 2 cores goes to seeds: 3 seeds x 3 biases of 2 epochs on 6,000 images,
# the 4 sizes scored on 500 test images, a short fine-tune at each larger size. Window attention's cost per
# image grows with tokens x window^2 (81x from W8 I64 to W24 I192), so the larger sizes fine-tune on fewer
# images (FINETUNE_IMAGES) and the test set stays small.
RECIPE = TrainRecipe(
    model=MODEL, img_size=BASE[0], window_size=BASE[1], epochs=2, batch_size=64, train_limit=6_000, amp="none"
)
FINETUNE = {"train_limit": 500, "epochs": 1, "warmup_epochs": 0.0, "lr": 4e-3, "batch_size": 32}
FINETUNE_IMAGES = {96: 500, 128: 400, 192: 200}  # per test size; others take FINETUNE's
TEST_IMAGES = 500
QUICK = {"train_limit": 500, "epochs": 1}
QUICK_FINETUNE = {"train_limit": 16}
QUICK_TEST_IMAGES = 50


def run(output: str | Path, quick: bool = False, progress: bool = False, seeds: int = 3) -> dict:
    """Train per bias and seed at the base size, test at every size without and with a fine-tune;
    write results.json, .md and .png."""
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    limit = QUICK_TEST_IMAGES if quick else TEST_IMAGES
    recipe = replace(RECIPE, **QUICK, val_limit=limit) if quick else replace(RECIPE, val_limit=limit)
    tune = {**FINETUNE, **QUICK_FINETUNE} if quick else FINETUNE
    rows, curves = [], {}
    for seed in seed_list(seeds):
        for name, bias in BIASES.items():
            run_dir = out / f"{name}_seed{seed}"
            overrides = {"position_bias": bias, "patch_size": PATCH, "pretrained_window_sizes": 0}
            fit(replace(recipe, model_overrides=overrides, seed=seed, output=str(run_dir)), progress=progress)
            rows += _test_sizes(name, seed, run_dir, limit, tuned=False)
            for img, window in TESTS:
                tuned_dir = out / f"{name}_seed{seed}_tuned{img}"
                images = tune["train_limit"] if quick else FINETUNE_IMAGES.get(img, tune["train_limit"])
                changes = dict(img_size=img, window_size=window, seed=seed, output=str(tuned_dir), **tune)
                changes["train_limit"] = images
                weights = str(run_dir / "model.safetensors")
                tuned = replace(recipe, model_overrides={"position_bias": bias, "patch_size": PATCH}, **changes)
                top1 = fit(replace(tuned, pretrained=weights), progress=progress)["top1"]  # on the same test images
                rows.append(_row(name, seed, img, window, True, top1))
            if seed == 0:
                curves[name] = bias_curves(run_dir, TESTS[-1][1])
    results = {
        "model": MODEL,
        "patch_size": PATCH,
        "base": {"img_size": BASE[0], "window": BASE[1]},
        "train_images": recipe.train_limit or 60_000,
        "epochs": recipe.epochs,
        "finetune": tune,
        "finetune_images": {
            str(i): tune["train_limit"] if quick else FINETUNE_IMAGES.get(i, tune["train_limit"]) for i, _ in TESTS
        },
        "test_images": limit,
        "seeds": seeds,
        "quick": quick,
        "rows": rows,
        "cells": cells(rows),
        "bias_curves": curves,
        "seconds": time.perf_counter() - start,
    }
    largest = TESTS[-1][0]
    log, table_ = (_cell(results, b, largest, False)["top1"] for b in ("log_cpb", "table_bicubic"))
    results["log_cpb_minus_table_at_largest"] = log["mean"] - table_["mean"]
    write_results(out, results, table(results), plot, "transfer.png")
    return results


def _test_sizes(name: str, seed: int, run_dir: Path, limit: int, tuned: bool) -> list[dict]:
    """The trained model scored at every size, the first ``limit`` test images."""
    rows = []
    for img, window in (BASE, *TESTS):
        rows.append(
            _row(name, seed, img, window, tuned, evaluate_classifier(run_dir, img, window, limit=limit)["top1"])
        )
    return rows


def _row(name: str, seed: int, img: int, window: int, tuned: bool, top1: float) -> dict:
    print(
        f"{name:<14} seed {seed}  {img:>4} px  window {window:>2}  fine-tuned {tuned!s:<5} top-1 {top1:.2f}", flush=True
    )
    return {"bias": name, "seed": seed, "img_size": img, "window": window, "finetuned": tuned, "top1": top1}


def cells(rows: list[dict]) -> list[dict]:
    """Per bias, size and column: top-1 over the seeds."""
    keys = dict.fromkeys((r["bias"], r["img_size"], r["window"], r["finetuned"]) for r in rows)
    out = []
    for bias, img, window, tuned in keys:
        mine = [r["top1"] for r in rows if (r["bias"], r["img_size"], r["finetuned"]) == (bias, img, tuned)]
        out.append({"bias": bias, "img_size": img, "window": window, "finetuned": tuned, "top1": spread(mine)})
    return out


def _cell(r: dict, bias: str, img: int, tuned: bool) -> dict:
    return next(c for c in r["cells"] if (c["bias"], c["img_size"], c["finetuned"]) == (bias, img, tuned))


@torch.no_grad()
def bias_curves(run_dir: Path, window: int) -> dict:
    """The bias a trained model gives offsets (0, dx) at ``window`` (dx = -(window-1) .. window-1), for
    each block of stage 1 (one head there): CPB's meta network on the offsets' coordinates, the table
    bicubic-resized. ``trained`` is the largest offset the training window had."""
    model, _ = load_classifier(run_dir)
    blocks = model.stages[0].blocks
    trained = model.cfg.window_size if isinstance(model.cfg.window_size, int) else model.cfg.window_size[0]
    curves = [_along_x(block.attn.rel_pos, window) for block in blocks]
    return {"offsets": list(range(-(window - 1), window)), "trained": trained - 1, "blocks": curves}


def _along_x(position, window: int) -> list[float]:
    row = slice((window - 1) * (2 * window - 1), window * (2 * window - 1))  # the offsets with dy = 0
    if isinstance(position, ContinuousPositionBias):
        coords = relative_coords_table([window, window], list(position.pretrained_window), position.log_spaced)
        values = 16 * torch.sigmoid(position.mlp(coords))
    else:
        values = resize_position_table(position.table, position.window, (window, window))
    return values[row, 0].tolist()


def table(r: dict) -> str:
    sizes = [(BASE[0], BASE[1]), *((i, w) for i, w in TESTS if any(c["img_size"] == i for c in r["cells"]))]
    tune = r["finetune"]
    lines = [
        f"{r['model']} (patch {r['patch_size']}, res-post-norm, cosine attention) trained at {r['base']['img_size']} "
        f"px / window {r['base']['window']} on {r['train_images']:,} Fashion-MNIST images for {r['epochs']} "
        f"epoch(s), {r['seeds']} seed(s) per cell (mean ± std); top-1 on {r['test_images']:,} test images, "
        f"without fine-tuning and after {tune['epochs']} epoch of "
        + ", ".join(f"{n:,} images at {i} px" for i, n in r["finetune_images"].items()),
        "",
        "| bias | "
        + " | ".join(f"W{w} I{i}" + ("" if i == BASE[0] else f" | W{w} I{i} tuned") for i, w in sizes)
        + " |",
        "|---|" + "---|" * (2 * len(sizes) - 1),
    ]
    for bias in BIASES:
        texts = []
        for img, _ in sizes:
            texts.append(mean_std(_cell(r, bias, img, False)["top1"]))
            if img != BASE[0]:
                texts.append(mean_std(_cell(r, bias, img, True)["top1"]))
        lines.append(f"| {bias} | " + " | ".join(texts) + " |")
    lines += ["", "Log-CPB against the others at each larger size (a difference only beyond both spreads):", ""]
    for other in ("linear_cpb", "table_bicubic"):
        for img, window in sizes[1:]:
            for tuned in (False, True):
                a, b = _cell(r, "log_cpb", img, tuned)["top1"], _cell(r, other, img, tuned)["top1"]
                lines.append(
                    f"- W{window} I{img}{' tuned' if tuned else ''}: log_cpb {a['mean'] - b['mean']:+.2f} against "
                    f"{other} ({verdict(a, b)})"
                )
    lines += [
        "",
        f"log-CPB minus table at the largest window, no fine-tuning: **{r['log_cpb_minus_table_at_largest']:+.2f}** "
        f"points; {r['seconds'] / 60:.1f} minutes.",
    ]
    return "\n".join(lines) + "\n"


def plot(r: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.5))
    windows = [BASE[1], *(w for i, w in TESTS if any(c["img_size"] == i for c in r["cells"]))]
    for bias, marker in zip(BIASES, "sod"):
        for tuned, style in ((False, "-"), (True, "--")):
            points = sorted(
                (c["window"], c["top1"]) for c in r["cells"] if c["bias"] == bias and c["finetuned"] == tuned
            )
            if tuned:  # the tuned column starts from the trained size's score
                start = next(
                    (c["window"], c["top1"]) for c in r["cells"] if c["bias"] == bias and c["window"] == BASE[1]
                )
                points = [start, *points]
            xs = [w for w, _ in points]
            label = f"{bias.replace('_', ' ')}{', fine-tuned' if tuned else ''}"
            ax.errorbar(xs, [t["mean"] for _, t in points], yerr=[t["std"] for _, t in points], fmt=marker + style,
                        capsize=3, label=label)  # fmt: skip
    ax.set_xticks(windows, [f"W{w}\n{w * 8} px" for w in windows])
    ax.set_xlabel("window and image size at test (trained at the first)")
    ax.set_ylabel(f"top-1 (%), mean ± std over {r['seeds']} seed(s)")
    ax.set_title("Position bias at larger windows (paper Table 1 in miniature)", fontsize=10)
    ax.legend(fontsize=7)
    for bias, color in zip(r["bias_curves"], ("tab:blue", "tab:orange", "tab:green")):
        curve = r["bias_curves"][bias]
        for k, values in enumerate(curve["blocks"]):
            bx.plot(curve["offsets"], values, "-" if k == 0 else ":", color=color,
                    label=f"{bias.replace('_', ' ')}, block {k + 1}")  # fmt: skip
    if r["bias_curves"]:
        trained = next(iter(r["bias_curves"].values()))["trained"]
        bx.axvspan(-trained, trained, color="grey", alpha=0.15, label="offsets seen in training")
    bx.set_xlabel("horizontal offset dx (dy = 0) at the largest test window")
    bx.set_ylabel("bias added to the attention logit")
    bx.set_title("Learned bias inside and outside the trained offsets (stage 1, seed 0)", fontsize=10)
    bx.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
