"""Hyper-parameters of a video SwinV2: the image model's, with a time axis on patches and windows."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..fields import check_field_types, field_values
from ..models.config import check_choices, check_ranges, check_stages, to_pair

MERGE_ORDERS = ("v2", "v1")  # patch merging: reduction then norm (SwinV2), or norm then reduction (Swin V1)
Triple = tuple[int, int, int]


def to_triple(value: int | tuple[int, ...] | list[int]) -> Triple:
    """``8`` -> ``(8, 8, 8)``; ``(t, s)`` -> ``(t, s, s)``; triples pass through."""
    if isinstance(value, int):
        return (value, value, value)
    v = tuple(int(x) for x in value)
    if len(v) == 2:
        return (v[0], v[1], v[1])
    if len(v) != 3:
        raise ValueError(f"expected an int, a (time, space) pair or a (t, h, w) triple, got {value!r}")
    return v  # type: ignore[return-value]


@dataclass(frozen=True)
class VideoSwinV2Config:
    """A video SwinV2 (clips ``(B, C, T, H, W)``): 3-D patches and windows ``(t, h, w)``, shifts in time
    and space, 3-D relative position bias, spatial-only patch merging.

    ``pretrained_window_sizes`` are per-stage ``(t, h, w)`` windows that Log-CPB normalises by (0: this
    model's own). The ablation switches are the image model's; with ``norm="pre"``, ``attention="dot"``,
    ``position_bias="table"``, ``merge="v1"`` and ``mask_padding=False`` the network is Video Swin (V1),
    as torchvision's ``swin3d_*`` builds it.
    """

    img_size: int | tuple[int, int] = 64
    num_frames: int = 8
    patch_size: Triple | tuple[int, int] | int = (2, 4, 4)  # given as to_triple takes it, stored as (t, h, w)
    in_chans: int = 3
    num_classes: int = 400
    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: Triple | tuple[int, int] | int = (8, 7, 7)
    pretrained_window_sizes: int | tuple = 0
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.1
    norm: str = "res_post"
    attention: str = "cosine"
    position_bias: str = "log_cpb"
    merge: str = "v2"
    clip_windows: bool = True
    mask_padding: bool = True
    fused_attention: bool = True
    cpb_hidden: int = 512

    def __post_init__(self) -> None:
        check_field_types(type(self), field_values(self), "video model config")
        object.__setattr__(self, "depths", tuple(self.depths))
        object.__setattr__(self, "num_heads", tuple(self.num_heads))
        object.__setattr__(self, "patch_size", to_triple(self.patch_size))
        object.__setattr__(self, "window_size", to_triple(self.window_size))
        pws = self.pretrained_window_sizes
        pws = (pws,) * len(self.depths) if isinstance(pws, int) else pws
        object.__setattr__(
            self, "pretrained_window_sizes", tuple(p if isinstance(p, int) else to_triple(p) for p in pws)
        )
        self._validate()

    def _validate(self) -> None:
        check_stages(self)
        check_ranges(self)
        if min(to_pair(self.img_size)) < 1:
            raise ValueError(f"img_size must be >= 1 (a clip's side in pixels), got {self.img_size!r}")
        if min(self.window_size) < 1 or min(self.patch_size) < 1 or self.num_frames < 1:
            raise ValueError("window_size, patch_size and num_frames must be >= 1")
        check_choices(self, merge=(self.merge, MERGE_ORDERS))

    @property
    def num_features(self) -> int:
        return self.embed_dim * 2 ** (len(self.depths) - 1)

    def stage_sizes(self, frames: int | None = None, img_size: int | tuple[int, int] | None = None) -> list[Triple]:
        """Token grid ``(t, h, w)`` of each stage for a clip (padding rounds up; time is never merged)."""
        h, w = to_pair(self.img_size if img_size is None else img_size)
        pt, ph, pw = self.patch_size
        t, h, w = -(-(frames or self.num_frames) // pt), -(-h // ph), -(-w // pw)
        sizes = [(t, h, w)]
        for _ in self.depths[1:]:
            h, w = -(-h // 2), -(-w // 2)
            sizes.append((t, h, w))
        return sizes

    def replace(self, **changes: object) -> VideoSwinV2Config:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
