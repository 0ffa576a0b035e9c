"""Weights in and out: safe checkpoint reading and atomic writing, pure layout conversion from the
official, timm, Hugging Face and torchvision checkpoints, the released checkpoints by name, and
``save_pretrained``. Depends on the models' configs and metadata, never on training or deployment."""
