"""On a GPU: the fused (SDPA) path against the explicit one, and against timm, on randomised weights.

The CPU test suite proves these equalities on a CPU; CUDA picks other SDPA kernels (flash, memory-
efficient), so the same checks run here wherever a GPU is at hand. fp32 with TF32 off. Prints max and mean
|diff| of logits and of every parameter gradient (relative to the largest gradient of that tensor).

    python benchmarks/cuda_parity.py [device]    # default cuda
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from swinv2 import create_model
from swinv2.tools.bench import _timm, randomize_parameters

CASES = {  # name: (registry entry, overrides); 200 px pads stage 1 (50 -> 56), 256 px shifts and clips
    "tiny w16 256 shifted, stage 4 clipped": ("swinv2_tiny_window16_256", {}),
    "tiny 200 padded": ("swinv2_tiny_window8_256", {"img_size": 200}),
    "base 384 pretrained-window 12->24": ("swinv2_base_window12to24_192to384", {}),
}


def _logits_and_grads(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict]:
    model.zero_grad(set_to_none=True)
    logits = model(x)
    F.cross_entropy(logits, y).backward()
    return logits.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def _worst_grad(a: dict, b: dict) -> float:
    return max(((a[n] - b[n]).abs().max() / a[n].abs().max().clamp_min(1e-30)).item() for n in a)


def main() -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = torch.device(sys.argv[1] if len(sys.argv) > 1 else "cuda")
    print(torch.cuda.get_device_name(dev) if dev.type == "cuda" else dev, "torch", torch.__version__)
    for label, (name, overrides) in CASES.items():
        size = overrides.get("img_size", 0) or None
        fused = randomize_parameters(create_model(name, drop_path_rate=0.0, **overrides)).to(dev).train()
        explicit = create_model(name, drop_path_rate=0.0, fused_attention=False, **overrides).to(dev).train()
        explicit.load_state_dict(fused.state_dict())
        img = size or fused.cfg.img_size
        x = torch.randn(2, 3, img, img, device=dev)
        y = torch.tensor([3, 7], device=dev)
        out_f, grad_f = _logits_and_grads(fused, x, y)
        out_e, grad_e = _logits_and_grads(explicit, x, y)
        diff = (out_f - out_e).abs()
        print(
            f"{label:<36} fused vs explicit: logits max {diff.max():.2e} mean {diff.mean():.2e}; "
            f"worst relative gradient {_worst_grad(grad_e, grad_f):.2e}"
        )
        if size is None:
            peer = _timm(fused.cpu().eval(), name, img).model.to(dev).eval()
            with torch.no_grad():
                diff = (peer(x) - fused.to(dev).eval()(x)).abs()
            print(f"{label:<36} timm vs swinv2 (eval): logits max {diff.max():.2e} mean {diff.mean():.2e}")


if __name__ == "__main__":
    main()
