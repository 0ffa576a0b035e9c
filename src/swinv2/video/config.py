"""Hyper-parameters of a video SwinV2: the image model's, with a time axis on patches and windows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..models.config import SwinV2ConfigBase, to_pair

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
class VideoSwinV2Config(SwinV2ConfigBase):
    """A video SwinV2 (clips ``(B, C, T, H, W)``): 3-D patches and windows ``(t, h, w)``, shifts in time
    and space, 3-D relative position bias, spatial-only patch merging.

    ``pretrained_window_sizes`` are per-stage ``(t, h, w)`` windows that Log-CPB normalises by (0: this
    model's own). The ablation switches are the image model's; with ``norm="pre"``, ``attention="dot"``,
    ``position_bias="table"``, ``merge="v1"`` and ``mask_padding=False`` the network is Video Swin (V1),
    as torchvision's ``swin3d_*`` builds it. Only the fields whose default or geometry differ from the
    image config's are declared here.
    """

    img_size: int | tuple[int, int] = 64
    patch_size: Triple | tuple[int, int] | int = (2, 4, 4)  # given as to_triple takes it, stored as (t, h, w)
    num_classes: int = 400
    window_size: Triple | tuple[int, int] | int = (8, 7, 7)
    pretrained_window_sizes: int | tuple = 0
    num_frames: int = 8
    merge: str = "v2"

    WHAT: ClassVar[str] = "video model config"
    _window = staticmethod(to_triple)

    def _normalise(self) -> None:
        object.__setattr__(self, "patch_size", to_triple(self.patch_size))
        object.__setattr__(self, "window_size", to_triple(self.window_size))

    def _choices(self) -> dict[str, tuple[str, tuple[str, ...]]]:
        return {"merge": (self.merge, MERGE_ORDERS)}

    def _validate(self) -> None:
        super()._validate()
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {self.num_frames}")

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
