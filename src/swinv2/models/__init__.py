"""Model families: the SwinV2 image model."""

from .config import SwinV2Config
from .swinv2 import SwinV2

__all__ = ["SwinV2", "SwinV2Config"]
