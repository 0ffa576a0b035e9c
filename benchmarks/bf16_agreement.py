"""bf16 inference's top-1 agreement with fp32 for a trained classifier (a `swinv2 train` run folder).

With random weights the top-1 margins are so small that rounding only the input to bf16 flips a few
percent of the classes (`swinv2 bench` reports that figure); a trained model is what the agreement means
for users. Measured on the run's validation images (its image folder's val split, else Fashion-MNIST's
test set) and on random inputs in the normalised input space, each next to its yardstick: the fp32 model
fed the inputs rounded to bf16 and nothing else. The bf16 model is the run's weights and inputs cast, as
`swinv2 bench` casts them.

    python benchmarks/bf16_agreement.py RUN_FOLDER [--random-inputs 10000] [--seed 5] [--val-limit N]
"""

from __future__ import annotations

import argparse
import copy
import json
import math

import torch

from swinv2.data.datasets import ReadableCollate
from swinv2.deploy.infer import load_classifier, run_data, validation_split


def top1(model: torch.nn.Module, batches: list[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([model(b.to(dtype)).float().argmax(1) for b in batches])


def agreement(a: torch.Tensor, b: torch.Tensor) -> dict:
    """Fraction of equal top-1 classes with its 95% interval half-width (normal approximation)."""
    p = (a == b).float().mean().item()
    return {"agreement": p, "interval95": 2 * math.sqrt(p * (1 - p) / len(a)), "inputs": len(a)}


def measure(batches: list[torch.Tensor], fp32: torch.nn.Module, bf16: torch.nn.Module) -> dict:
    reference = top1(fp32, batches, torch.float32)
    rounded = [b.to(torch.bfloat16).float() for b in batches]
    return {
        "bf16": agreement(top1(bf16, batches, torch.bfloat16), reference),
        "input_rounding_only": agreement(top1(fp32, rounded, torch.float32), reference),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", help="a `swinv2 train` run folder or its model.safetensors")
    parser.add_argument("--random-inputs", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--val-limit", type=int, help="the first N validation images only (default: all)")
    args = parser.parse_args()
    if args.random_inputs < 1 or args.batch_size < 1 or (args.val_limit is not None and args.val_limit < 1):
        parser.error("--random-inputs, --batch-size and --val-limit must be >= 1")
    model, info = load_classifier(args.run)
    low = copy.deepcopy(model).to(torch.bfloat16)
    val, _, transform = validation_split(run_data(args.run), model, info["preprocessing"], args.val_limit)
    loader = torch.utils.data.DataLoader(val, batch_size=args.batch_size, collate_fn=ReadableCollate(val))
    images = [transform(x) if transform else x for x, _ in loader]
    labels = torch.cat([y for _, y in loader])
    size = model.cfg.img_size if isinstance(model.cfg.img_size, int) else model.cfg.img_size[0]
    shape = (args.random_inputs, model.cfg.in_chans, size, size)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(args.seed)).split(args.batch_size)
    result = {"run": str(args.run), "img_size": size}
    result["validation_images"] = measure(images, model, low)
    result["validation_images"]["top1_fp32"] = (top1(model, images, torch.float32) == labels).float().mean().item()
    result["validation_images"]["top1_bf16"] = (top1(low, images, torch.bfloat16) == labels).float().mean().item()
    result["random_inputs"] = measure(list(noise), model, low)
    for name in ("validation_images", "random_inputs"):
        part = result[name]
        print(
            f"{name}: bf16 {100 * part['bf16']['agreement']:.2f}% +- {100 * part['bf16']['interval95']:.2f} "
            f"of {part['bf16']['inputs']}; input rounding only {100 * part['input_rounding_only']['agreement']:.2f}%"
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
