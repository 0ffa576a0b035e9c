"""Window and resolution transfer of the position bias (paper Table 1), on Fashion-MNIST.

One small SwinV2 (res-post-norm, cosine attention) is trained three times at 64 px with 4 x 4 windows,
once per relative position bias: V1's parameterised table (bicubic-resized to a new window), the
linear-spaced CPB and the log-spaced CPB. Each is then evaluated without fine-tuning at 96, 128 and 160 px
with windows of 6, 8 and 10: the window grows with the image, as in the paper's 256 px / W8 ->
768 px / W24, so every stage keeps its number of windows and only the relative coordinates the bias must
produce are new (up to +-9 for a bias trained on +-3). Images are Fashion-MNIST's 28 px, resized.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from ...deploy.infer import evaluate_classifier
from ...train import TrainRecipe, fit
from . import write_results

MODEL = "swinv2_pico_window7_28"
BASE = (64, 4)  # image side, window
TESTS = ((96, 6), (128, 8), (160, 10))
BIASES = {"table_bicubic": "table", "linear_cpb": "linear_cpb", "log_cpb": "log_cpb"}
RECIPE = TrainRecipe(model=MODEL, img_size=BASE[0], window_size=BASE[1], epochs=4, batch_size=128, amp="none")
QUICK = {"train_limit": 10_000, "epochs": 2, "val_limit": 2_000}
EVAL_LIMIT = None  # the full 10,000-image test set; QUICK's val_limit in --quick


def run(output: str | Path, quick: bool = False, progress: bool = False) -> dict:
    """Train per bias at the base size, evaluate at every size; write results.json, .md and .png."""
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    recipe = replace(RECIPE, **QUICK) if quick else RECIPE
    limit = QUICK["val_limit"] if quick else EVAL_LIMIT
    rows = []
    for name, bias in BIASES.items():
        run_dir = out / name
        overrides = {"position_bias": bias, "pretrained_window_sizes": 0}
        fit(replace(recipe, model_overrides=overrides, output=str(run_dir)), progress=progress)
        for img, window in (BASE, *TESTS):
            result = evaluate_classifier(run_dir, img, window, limit=limit)
            rows.append({"bias": name, "img_size": img, "window": window, "finetuned": False, "top1": result["top1"]})
            print(f"{name:<14} {img:>4} px  window {window:>2}  top-1 {result['top1']:.2f}", flush=True)
    results = {
        "model": MODEL,
        "base": {"img_size": BASE[0], "window": BASE[1]},
        "train_images": recipe.train_limit or 60_000,
        "epochs": recipe.epochs,
        "test_images": limit or 10_000,
        "quick": quick,
        "rows": rows,
        "seconds": time.perf_counter() - start,
    }
    largest = TESTS[-1][0]
    top = {r["bias"]: r["top1"] for r in rows if r["img_size"] == largest}
    results["log_cpb_minus_table_at_largest"] = top["log_cpb"] - top["table_bicubic"]
    write_results(out, results, table(results), plot, "transfer.png")
    return results


def table(r: dict) -> str:
    sizes = sorted({(row["img_size"], row["window"]) for row in r["rows"]})
    lines = [
        f"{r['model']} (res-post-norm, cosine attention) trained at {r['base']['img_size']} px / window "
        f"{r['base']['window']} on {r['train_images']:,} Fashion-MNIST images for {r['epochs']} epochs; top-1 on "
        f"{r['test_images']:,} test images, no fine-tuning",
        "",
        "| bias | " + " | ".join(f"W{w} I{i}" for i, w in sizes) + " |",
        "|---|" + "---|" * len(sizes),
    ]
    for bias in dict.fromkeys(row["bias"] for row in r["rows"]):
        cells = {(row["img_size"], row["window"]): row["top1"] for row in r["rows"] if row["bias"] == bias}
        lines.append(f"| {bias} | " + " | ".join(f"{cells[s]:.2f}" for s in sizes) + " |")
    lines += [
        "",
        f"log-CPB minus table at the largest window: **{r['log_cpb_minus_table_at_largest']:+.2f}** points; "
        f"{r['seconds'] / 60:.1f} minutes.",
    ]
    return "\n".join(lines) + "\n"


def plot(r: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for bias, marker in zip(dict.fromkeys(row["bias"] for row in r["rows"]), "sod"):
        points = sorted((row["window"], row["top1"]) for row in r["rows"] if row["bias"] == bias)
        ax.plot([w for w, _ in points], [t for _, t in points], marker + "-", label=bias.replace("_", " "))
    windows = sorted({row["window"] for row in r["rows"]})
    ax.set_xticks(windows, [f"W{w}\n{w * 16} px" for w in windows])
    ax.set_xlabel("window and image size at test (trained at the first)")
    ax.set_ylabel("top-1 (%), no fine-tuning")
    ax.set_title("Position bias at larger windows (paper Table 1 in miniature)", fontsize=10)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
