"""Deployment and interop: preprocessing that travels with the weights, ``save_pretrained`` /
``from_pretrained`` (the Hugging Face Hub layout), export to ONNX / TorchScript / torch.export, and
model entries for ``timm.create_model``."""

from ..models.preprocess import Preprocessing
from .hub import from_pretrained, save_pretrained

__all__ = ["Preprocessing", "from_pretrained", "save_pretrained"]
