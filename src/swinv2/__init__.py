"""swinv2: Swin Transformer V2 (Liu et al., CVPR 2022) on PyTorch.

The model, exact to the paper and interchangeable with the official, timm, Hugging Face and torchvision
checkpoints; see :func:`create_model` and :func:`convert_state_dict`.
"""

from .convert import convert_state_dict, detect_source
from .deploy import Preprocessing, from_pretrained, save_pretrained
from .factory import create_model
from .models import SwinV2, SwinV2Config
from .registry import get_config, list_models

__version__ = "0.1.0"

__all__ = [
    "Preprocessing",
    "SwinV2",
    "SwinV2Config",
    "convert_state_dict",
    "create_model",
    "detect_source",
    "from_pretrained",
    "get_config",
    "list_models",
    "save_pretrained",
]
