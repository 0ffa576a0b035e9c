"""Named SwinV2 configurations: the paper's T/S/B/L/H/G family under timm's names, plus small CPU sizes.

Each entry records the parameter count (1000 classes unless noted) and GFLOPs (multiply-accumulates, as
the paper counts them) at its nominal resolution; ``tests/test_registry.py`` recomputes both so the
table cannot drift from the code.
"""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass

from .config import SwinV2Config


@dataclass(frozen=True)
class ModelEntry:
    name: str
    config: SwinV2Config
    params: int
    gflops: float
    notes: str = ""


_REGISTRY: dict[str, ModelEntry] = {}

SIZES = {
    # name: (embed_dim, depths, heads, extra_norm_every)
    "tiny": (96, (2, 2, 6, 2), (3, 6, 12, 24), 0),
    "small": (96, (2, 2, 18, 2), (3, 6, 12, 24), 0),
    "base": (128, (2, 2, 18, 2), (4, 8, 16, 32), 0),
    "large": (192, (2, 2, 18, 2), (6, 12, 24, 48), 0),
    "huge": (352, (2, 2, 18, 2), (11, 22, 44, 88), 6),
    "giant": (512, (2, 2, 42, 4), (16, 32, 64, 128), 6),
}
FROM_192 = (12, 12, 12, 6)  # stage 4 of a 192 px model is 6 x 6 tokens: its window was clipped to 6


def register(name: str, config: SwinV2Config, params: int, gflops: float, notes: str = "") -> None:
    """Add a named configuration; names are unique."""
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    _REGISTRY[name] = ModelEntry(name, config, params, gflops, notes)


def _family(size: str, img: int, window: int, pretrained=(0, 0, 0, 0), classes: int = 1000, **kw) -> SwinV2Config:
    dim, depths, heads, extra = SIZES[size]
    return SwinV2Config(
        img_size=img,
        window_size=window,
        embed_dim=dim,
        depths=depths,
        num_heads=heads,
        pretrained_window_sizes=pretrained,
        num_classes=classes,
        extra_norm_every=extra,
        drop_path_rate={"tiny": 0.2, "small": 0.3, "base": 0.5}.get(size, 0.2),
        **kw,
    )


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style pattern, sorted."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def get_entry(name: str) -> ModelEntry:
    """The registry entry for ``name``; unknown names raise ``ValueError`` suggesting close matches."""
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see `swinv2 models`"
        raise ValueError(f"unknown model {name!r}{hint}")
    return _REGISTRY[name]


def get_config(name: str, **overrides: object) -> SwinV2Config:
    """The named configuration with fields replaced by ``overrides`` (unknown fields are refused)."""
    cfg = get_entry(name).config
    if "depths" in overrides and "pretrained_window_sizes" not in overrides and not any(cfg.pretrained_window_sizes):
        overrides["pretrained_window_sizes"] = 0  # "own window" for however many stages the override has
    unknown = set(overrides) - set(cfg.to_dict())
    if unknown:
        raise ValueError(f"unknown config field(s) {sorted(unknown)}; valid: {sorted(cfg.to_dict())}")
    return cfg.replace(**overrides) if overrides else cfg


# --- the released checkpoints (timm's names) ---------------------------------------------------------
for _size, _meta in {
    "tiny": {8: (28_347_154, 5.940), 16: (28_347_154, 6.661)},
    "small": {8: (49_728_418, 11.546), 16: (49_728_418, 12.783)},
    "base": {8: (87_918_816, 20.325), 16: (87_918_816, 21.969)},
}.items():
    for _window, (_params, _gflops) in _meta.items():
        register(f"swinv2_{_size}_window{_window}_256", _family(_size, 256, _window), _params, _gflops)

for _size, _meta in {
    "base": [(109_280_841, 11.878), (87_918_816, 21.969), (87_918_816, 55.148)],
    "large": [(228_772_549, 26.134), (196_739_932, 47.740), (196_739_932, 115.991)],
}.items():
    register(f"swinv2_{_size}_window12_192", _family(_size, 192, 12, classes=21841), *_meta[0], "ImageNet-22K head")
    register(f"swinv2_{_size}_window12to16_192to256", _family(_size, 256, 16, FROM_192), *_meta[1])
    register(f"swinv2_{_size}_window12to24_192to384", _family(_size, 384, 24, FROM_192), *_meta[2])

# --- the paper's H and G (no public weights): pretrained at 192 px / window 12, fine-tuned larger -----
register("swinv2_huge_window12_192", _family("huge", 192, 12), 658_036_370, 85.993)
register("swinv2_huge_window12to32_192to512", _family("huge", 512, 32, FROM_192), 658_036_370, 688.356)
register("swinv2_giant_window12_192", _family("giant", 192, 12), 3_001_940_680, 371.513)
register("swinv2_giant_window12to40_192to640", _family("giant", 640, 40, FROM_192), 3_001_940_680, 4648.499)

# --- small sizes for CPU work and tests (28 to 64 px images such as Fashion-MNIST) ---------------------
register(
    "swinv2_test_window4_32",
    SwinV2Config(
        img_size=32,
        patch_size=2,
        embed_dim=16,
        depths=(2, 2, 2, 2),
        num_heads=(1, 2, 2, 4),
        window_size=4,
        num_classes=10,
        drop_path_rate=0.0,
        cpb_hidden=32,
    ),
    574_604,
    0.007,
    "unit tests",
)
register(
    "swinv2_nano_window7_28",
    SwinV2Config(
        img_size=28,
        patch_size=4,
        embed_dim=64,
        depths=(2, 2, 2),
        num_heads=(2, 4, 8),
        window_size=7,
        num_classes=10,
        drop_path_rate=0.0,
    ),
    2_269_670,
    0.02,
    "Fashion-MNIST at its native 28 px",
)
register(
    "swinv2_pico_window7_28",
    SwinV2Config(
        img_size=28,
        patch_size=4,
        embed_dim=32,
        depths=(2, 2, 2),
        num_heads=(1, 2, 4),
        window_size=7,
        num_classes=10,
        drop_path_rate=0.0,
    ),
    582_392,
    0.006,
    "Fashion-MNIST at 28 px, 2.1x nano's training speed (swinv2 train's default)",
)
register(
    "swinv2_micro_window4_32",
    SwinV2Config(
        img_size=32,
        patch_size=2,
        embed_dim=32,
        depths=(2, 2, 6, 2),
        num_heads=(1, 2, 4, 8),
        window_size=4,
        num_classes=10,
        drop_path_rate=0.1,
    ),
    3_111_576,
    0.042,
    "small images, 4 stages",
)
register(
    "swinv2_mini_window8_64",
    SwinV2Config(
        img_size=64,
        patch_size=4,
        embed_dim=64,
        depths=(2, 2, 6, 2),
        num_heads=(2, 4, 8, 16),
        window_size=8,
        num_classes=10,
        drop_path_rate=0.1,
    ),
    12_301_862,
    0.169,
    "64 px images",
)
register(
    "swinv2_femto_window8_128",
    SwinV2Config(
        img_size=128,
        patch_size=4,
        embed_dim=32,
        depths=(2, 2, 6, 2),
        num_heads=(1, 2, 4, 8),
        window_size=8,
        num_classes=10,
        drop_path_rate=0.1,
    ),
    3_112_728,
    0.184,
    "dense-task backbone for 128 px scenes on a CPU (swinv2 detect / segment default)",
)
