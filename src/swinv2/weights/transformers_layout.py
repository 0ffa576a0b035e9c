"""Hugging Face transformers' Swinv2 repositories: ``config.json`` (a ``Swinv2Config``) mapped to this
project's config, and back, for ``from_pretrained("owner/name")`` and ``save_pretrained(layout=...)``.

A transformers repository holds ``config.json`` and ``model.safetensors`` (or ``pytorch_model.bin``) of
``Swinv2ForImageClassification``, a bare ``Swinv2Model`` or ``Swinv2ForMaskedImageModeling``. Its
windows clip as the official code's do, which is this project's default.
"""

from __future__ import annotations

from torch import nn

ARCHITECTURES = {
    "Swinv2ForImageClassification": "classify",
    "Swinv2Model": "bare",
    "Swinv2ForMaskedImageModeling": "masked",
    "Swinv2Backbone": "bare",
}
FIELDS = {  # transformers' name -> this project's
    "image_size": "img_size",
    "patch_size": "patch_size",
    "num_channels": "in_chans",
    "embed_dim": "embed_dim",
    "depths": "depths",
    "num_heads": "num_heads",
    "window_size": "window_size",
    "pretrained_window_sizes": "pretrained_window_sizes",
    "mlp_ratio": "mlp_ratio",
    "qkv_bias": "qkv_bias",
    "hidden_dropout_prob": "drop_rate",
    "attention_probs_dropout_prob": "attn_drop_rate",
    "drop_path_rate": "drop_path_rate",
}
CPB_HIDDEN = 512  # transformers' continuous position bias network is always 2 -> 512 -> heads


def is_transformers_config(config: dict) -> bool:
    return isinstance(config, dict) and config.get("model_type") == "swinv2"


def kind_of(config: dict) -> str:
    """``classify``, ``bare`` or ``masked``: what the repository's model is (its first architecture)."""
    names = config.get("architectures") or ["Swinv2ForImageClassification" if config.get("id2label") else "Swinv2Model"]
    if names[0] not in ARCHITECTURES:
        raise ValueError(f"a Swinv2 repository of a {names[0]}; expected one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[names[0]]


def config_fields(config: dict) -> dict:
    """This project's config fields for a transformers ``Swinv2Config`` dict; what it cannot express is
    refused by name (absolute position embeddings, another activation or LayerNorm epsilon)."""
    if not is_transformers_config(config):
        raise ValueError(
            f"not a transformers Swinv2Config (model_type {config.get('model_type')!r}, expected 'swinv2')"
        )
    refusals = {
        "use_absolute_embeddings": (False, "absolute position embeddings"),
        "hidden_act": ("gelu", "an activation other than exact GELU"),
        "layer_norm_eps": (1e-5, "a LayerNorm epsilon other than 1e-5"),
    }
    for key, (expected, what) in refusals.items():
        if key in config and config[key] != expected:
            raise ValueError(f"config.json has {key}={config[key]!r}: {what} is not part of this SwinV2")
    fields = {ours: config[theirs] for theirs, ours in FIELDS.items() if theirs in config}
    for key in ("img_size", "window_size"):
        if isinstance(fields.get(key), list):
            fields[key] = tuple(fields[key])
    for key in ("depths", "num_heads", "pretrained_window_sizes"):
        if key in fields:
            fields[key] = tuple(fields[key])
    if "pretrained_window_sizes" in fields and "depths" in fields:  # transformers reads the first len(depths)
        fields["pretrained_window_sizes"] = fields["pretrained_window_sizes"][: len(fields["depths"])]
    fields["num_classes"] = len(config.get("id2label") or {}) if kind_of(config) == "classify" else 0
    return fields


def to_transformers_config(model: nn.Module, classes: list[str] | None = None) -> dict:
    """A ``Swinv2Config`` dict for ``model`` (``Swinv2ForImageClassification``, or ``Swinv2Model`` without
    a head); configurations transformers cannot express are refused by name."""
    from .._version import __version__

    cfg = model.cfg
    unsupported = {
        "norm": (cfg.norm, "res_post"),
        "attention": (cfg.attention, "cosine"),
        "position_bias": (cfg.position_bias, "log_cpb"),
        "extra_norm_every": (cfg.extra_norm_every, 0),
        "clip_windows": (cfg.clip_windows, True),
        "cpb_hidden": (cfg.cpb_hidden, CPB_HIDDEN),
    }
    for name, (value, needed) in unsupported.items():
        if value != needed:
            raise ValueError(
                f"transformers' Swinv2 has no {name}={value!r} (it needs {needed!r}); save this model as swinv2"
            )
    window = cfg.window_size
    if not isinstance(window, int) and len(set(window)) > 1:
        raise ValueError(f"transformers' Swinv2 takes one square window for every stage, not {window}")
    img = cfg.img_size if isinstance(cfg.img_size, int) else list(cfg.img_size)
    config = {theirs: getattr(cfg, ours) for theirs, ours in FIELDS.items()}
    config = {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}
    names = classes if classes is not None else getattr(model, "classes", None)
    labels = {str(i): (names[i] if names else f"LABEL_{i}") for i in range(cfg.num_classes)}
    config.update(
        image_size=img,
        window_size=window if isinstance(window, int) else window[0],
        model_type="swinv2",
        architectures=["Swinv2ForImageClassification" if cfg.num_classes else "Swinv2Model"],
        hidden_act="gelu",
        use_absolute_embeddings=False,
        layer_norm_eps=1e-5,
        encoder_stride=cfg.patch_size * 2 ** (len(cfg.depths) - 1),
        initializer_range=0.02,
        id2label=labels,
        label2id={name: int(i) for i, name in labels.items()},
        written_by=f"swinv2 {__version__}",
    )
    return config


def image_processor_config(prep) -> dict:
    """``preprocessor_config.json`` for transformers' ``ViTImageProcessor`` (what Microsoft's repositories
    hold): resize to the input size, rescale, normalise with ``prep``'s (a Preprocessing) statistics."""
    resample = {"nearest": 0, "bilinear": 2, "bicubic": 3}[prep.interpolation]
    return {
        "image_processor_type": "ViTImageProcessor",
        "do_resize": True,
        "size": {"height": prep.input_size[1], "width": prep.input_size[2]},
        "resample": resample,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(prep.mean),
        "image_std": list(prep.std),
    }
