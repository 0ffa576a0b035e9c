"""Dense prediction on SwinV2: the backbone, torchvision's detectors over it, UperNet, and the runs."""

from .backbone import SwinV2Backbone, create_backbone
from .detection import SwinV2FPN, build_detector
from .recipe import DenseRecipe
from .segmentation import Segmenter, UperNetHead

__all__ = [
    "DenseRecipe",
    "Segmenter",
    "SwinV2Backbone",
    "SwinV2FPN",
    "UperNetHead",
    "build_detector",
    "create_backbone",
]
