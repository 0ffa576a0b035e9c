"""swinv2: Swin Transformer V2 (Liu et al., CVPR 2022) on PyTorch.

The model, exact to the paper and interchangeable with the official, timm, Hugging Face and torchvision
checkpoints; see :func:`create_model` and :func:`convert_state_dict`.
"""

from ._version import __version__
from .deploy import Preprocessing, from_pretrained, save_pretrained
from .models import SwinV2, SwinV2Config
from .models.registry import get_config, list_models
from .pretrained.factory import create_model
from .weights.convert import convert_state_dict, detect_source

__all__ = [
    "Preprocessing",
    "SwinV2",
    "SwinV2Config",
    "__version__",
    "convert_state_dict",
    "create_model",
    "detect_source",
    "from_pretrained",
    "get_config",
    "list_models",
    "save_pretrained",
]
