"""Model families: the SwinV2 image model and its SimMIM pretraining wrapper."""

from .config import SwinV2Config
from .simmim import MaskGenerator, SimMIM, masked_l1, normalize_targets
from .swinv2 import SwinV2

__all__ = ["MaskGenerator", "SimMIM", "SwinV2", "SwinV2Config", "masked_l1", "normalize_targets"]
