"""Video SwinV2: 3-D shifted windows, 3-D Log-CPB, inflation from image models, training on clips."""

from .config import VideoSwinV2Config
from .inflate import inflate
from .model import VideoSwinV2
from .registry import create_video_model, get_video_config, list_video_models

__all__ = ["VideoSwinV2", "VideoSwinV2Config", "create_video_model", "get_video_config", "inflate", "list_video_models"]
