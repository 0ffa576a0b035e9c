"""Architecture hyper-parameters of a SwinV2 image model, as one frozen, validated dataclass."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, Self

from ..fields import check_field_types, field_values
from ..layers import ATTENTION_TYPES, POSITION_BIASES

NORM_PLACEMENTS = ("res_post", "pre")


def to_pair(value: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """``8`` -> ``(8, 8)``; pairs pass through as tuples."""
    if isinstance(value, int):
        return (value, value)
    pair = tuple(int(v) for v in value)
    if len(pair) != 2:
        raise ValueError(f"expected an int or a pair, got {value!r}")
    return pair  # type: ignore[return-value]


def check_stages(cfg) -> None:
    """One depth, head count and pretrained window per stage; every stage's width divisible by its heads."""
    n = len(cfg.depths)
    if n == 0 or len(cfg.num_heads) != n or len(cfg.pretrained_window_sizes) != n:
        raise ValueError(
            f"depths, num_heads and pretrained_window_sizes need one entry per stage; got "
            f"{cfg.depths}, {cfg.num_heads}, {cfg.pretrained_window_sizes}"
        )
    for i, heads in enumerate(cfg.num_heads):
        if (cfg.embed_dim * 2**i) % heads:
            raise ValueError(f"stage {i}: width {cfg.embed_dim * 2**i} is not divisible by {heads} heads")


def check_ranges(cfg) -> None:
    """Counts, widths and rates of an image or video config within their meaningful ranges."""
    problems = [
        f"{name} must be >= {low}, got {getattr(cfg, name)}"
        for name, low in (("num_classes", 0), ("in_chans", 1), ("embed_dim", 1), ("cpb_hidden", 1))
        if hasattr(cfg, name) and getattr(cfg, name) < low
    ]
    problems += [f"depths must be >= 1 per stage, got {cfg.depths}"] if min(cfg.depths, default=1) < 1 else []
    problems += [f"mlp_ratio must be > 0, got {cfg.mlp_ratio}"] if cfg.mlp_ratio <= 0 else []
    problems += [
        f"{name} must be in [0, 1), got {getattr(cfg, name)}"
        for name in ("drop_rate", "attn_drop_rate", "drop_path_rate")
        if hasattr(cfg, name) and not 0 <= getattr(cfg, name) < 1
    ]
    if problems:
        raise ValueError("; ".join(problems))


def check_choices(cfg, **extra: tuple[str, tuple[str, ...]]) -> None:
    """The ablation switches (and ``extra`` ones, ``field=(value, allowed)``) take known values."""
    choices = {
        "norm": (cfg.norm, NORM_PLACEMENTS),
        "attention": (cfg.attention, ATTENTION_TYPES),
        "position_bias": (cfg.position_bias, POSITION_BIASES),
        **extra,
    }
    for field, (value, allowed) in choices.items():
        if value not in allowed:
            raise ValueError(f"{field} must be one of {allowed}, got {value!r}")


@dataclass(frozen=True)
class SwinV2ConfigBase:
    """The fields, normalisation and checks that image and video SwinV2 configs share.

    A subclass says how a window or patch is spelled in its geometry (``_window``: a pair for images,
    a ``(t, h, w)`` triple for video) and may add fields and choices (``_choices``); everything else,
    from the stage checks to ``replace`` and ``to_dict``, is written once here. ``pretrained_window_sizes``
    is given per stage or as one value for all; 0 stands for the model's own window.
    """

    img_size: int | tuple[int, int] = 256
    patch_size: int = 4
    in_chans: int = 3
    num_classes: int = 1000
    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: int | tuple[int, int] = 8
    pretrained_window_sizes: int | tuple[int | tuple[int, int], ...] = 0
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.1
    norm: str = "res_post"
    attention: str = "cosine"
    position_bias: str = "log_cpb"
    clip_windows: bool = True
    mask_padding: bool = True
    fused_attention: bool = True
    cpb_hidden: int = 512

    WHAT: ClassVar[str] = "model config"  # names the config in error messages

    def __post_init__(self) -> None:
        check_field_types(type(self), field_values(self), self.WHAT)
        object.__setattr__(self, "depths", tuple(self.depths))
        object.__setattr__(self, "num_heads", tuple(self.num_heads))
        pws = self.pretrained_window_sizes
        pws = (pws,) * len(self.depths) if isinstance(pws, int) else pws
        object.__setattr__(
            self, "pretrained_window_sizes", tuple(p if isinstance(p, int) else self._window(p) for p in pws)
        )
        self._normalise()
        self._validate()

    @staticmethod
    def _window(value: int | tuple[int, ...] | list[int]) -> tuple[int, ...]:
        """A window or patch size in this config's geometry."""
        raise NotImplementedError

    def _normalise(self) -> None:
        """Store the fields a subclass accepts in several spellings in one."""

    def _choices(self) -> dict[str, tuple[str, tuple[str, ...]]]:
        """Choice fields beyond the ablation switches, as ``field=(value, allowed)``."""
        return {}

    def _validate(self) -> None:
        check_stages(self)
        check_ranges(self)
        if min(to_pair(self.img_size)) < 1:
            raise ValueError(f"img_size must be >= 1 (pixels per side), got {self.img_size!r}")
        if min(self._window(self.window_size)) < 1 or min(self._window(self.patch_size)) < 1:
            raise ValueError(f"window_size and patch_size must be >= 1, got {self.window_size!r}, {self.patch_size!r}")
        if any(min(self._window(p)) < 0 for p in self.pretrained_window_sizes):
            raise ValueError(f"pretrained_window_sizes must be >= 0, got {self.pretrained_window_sizes}")
        check_choices(self, **self._choices())

    @property
    def num_features(self) -> int:
        return self.embed_dim * 2 ** (len(self.depths) - 1)

    def replace(self, **changes: object) -> Self:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class SwinV2Config(SwinV2ConfigBase):
    """Everything that defines an image network (nothing about training).

    ``pretrained_window_sizes[i]`` is the window stage ``i`` was (pre)trained with; Log-CPB normalises
    relative coordinates by it so that a larger window later extrapolates instead of re-scaling. 0 means
    "this model's own window at ``img_size``", resolved once when the model is built.
    ``norm``, ``attention`` and ``position_bias`` are the paper's ablation switches (V1 = ``pre``, ``dot``,
    ``table``). ``clip_windows=False`` and ``mask_padding=False`` reproduce torchvision's behaviour
    (pad up to the window, attend to padding); the defaults follow the official code and keep padding
    out of attention. ``extra_norm_every`` adds the paper's extra LayerNorm every that many blocks (the
    huge and giant models).
    """

    extra_norm_every: int = 0

    _window = staticmethod(to_pair)

    def stage_feature_sizes(self, img_size: int | tuple[int, int] | None = None) -> list[tuple[int, int]]:
        """Token-grid size of each stage for an image (padding rounds up, as the model does)."""
        h, w = to_pair(self.img_size if img_size is None else img_size)
        h, w = -(-h // self.patch_size), -(-w // self.patch_size)
        sizes = [(h, w)]
        for _ in self.depths[1:]:
            h, w = -(-h // 2), -(-w // 2)
            sizes.append((h, w))
        return sizes
