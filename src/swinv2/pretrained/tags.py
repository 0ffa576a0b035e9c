"""The released SwinV2 weights, under timm's ``name.tag`` convention, and where each copy lives.

Every ``ms_*`` tag is one set of Microsoft's weights published three times: by timm on the Hugging Face
Hub (``timm/<name>.<tag>``, timm's layout), by Microsoft in the transformers layout
(``microsoft/swinv2-...``), and as the official GitHub-release ``.pth`` file. ``tv_in1k`` tags are
torchvision's own, retrained weights (their windows are padded, not clipped, as torchvision runs them).
Sizes, crops and the top-1 each publisher reports come from the publishers (PAPER.md lists them).
"""

from __future__ import annotations

from dataclasses import dataclass, field

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
OFFICIAL_RELEASE = "https://github.com/SwinTransformer/storage/releases/download/v2.0.0/"
TORCHVISION = "https://download.pytorch.org/models/"
SOURCES = ("timm", "hf", "official", "torchvision")  # also the checkpoint layout each source is in


@dataclass(frozen=True)
class PretrainedTag:
    """One released set of weights for a registered model: its preprocessing, classes and copies."""

    model: str
    tag: str
    img_size: int
    num_classes: int
    dataset: str
    top1: float | None  # as its publisher reports it, ImageNet-1K validation
    sources: dict[str, str]  # source -> Hub repository id or URL
    crop_pct: float = 0.9
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    overrides: dict = field(default_factory=dict)  # config fields the weights need (torchvision's padding)

    @property
    def name(self) -> str:
        return f"{self.model}.{self.tag}"

    @property
    def default_source(self) -> str:
        return next(iter(self.sources))


def _microsoft(model: str, tag: str, img: int, classes: int, dataset: str, top1, official: str, hf: str, **kw):
    sources = {"timm": f"timm/{model}.{tag}", "hf": f"microsoft/{hf}", "official": OFFICIAL_RELEASE + official}
    return PretrainedTag(model, tag, img, classes, dataset, top1, sources, **kw)


_IN1K = [  # (size, window, top-1)
    ("tiny", 8, 81.8),
    ("tiny", 16, 82.8),
    ("small", 8, 83.7),
    ("small", 16, 84.1),
    ("base", 8, 84.2),
    ("base", 16, 84.6),
]
_IN22K = {"base": (86.2, 87.1), "large": (86.9, 87.6)}  # top-1 of the 256 px and 384 px fine-tunes

TAGS: list[PretrainedTag] = [
    _microsoft(
        f"swinv2_{size}_window{w}_256",
        "ms_in1k",
        256,
        1000,
        "ImageNet-1K",
        top1,
        f"swinv2_{size}_patch4_window{w}_256.pth",
        f"swinv2-{size}-patch4-window{w}-256",
    )
    for size, w, top1 in _IN1K
]
for _size, (_top256, _top384) in _IN22K.items():
    TAGS += [
        _microsoft(
            f"swinv2_{_size}_window12_192",
            "ms_in22k",
            192,
            21841,
            "ImageNet-22K",
            None,
            f"swinv2_{_size}_patch4_window12_192_22k.pth",
            f"swinv2-{_size}-patch4-window12-192-22k",
        ),
        _microsoft(
            f"swinv2_{_size}_window12to16_192to256",
            "ms_in22k_ft_in1k",
            256,
            1000,
            "ImageNet-22K, fine-tuned on ImageNet-1K",
            _top256,
            f"swinv2_{_size}_patch4_window12to16_192to256_22kto1k_ft.pth",
            f"swinv2-{_size}-patch4-window12to16-192to256-22kto1k-ft",
        ),
        _microsoft(
            f"swinv2_{_size}_window12to24_192to384",
            "ms_in22k_ft_in1k",
            384,
            1000,
            "ImageNet-22K, fine-tuned on ImageNet-1K",
            _top384,
            f"swinv2_{_size}_patch4_window12to24_192to384_22kto1k_ft.pth",
            f"swinv2-{_size}-patch4-window12to24-192to384-22kto1k-ft",
            crop_pct=1.0,
        ),
    ]
# torchvision: resize 260 (272 for B) then crop 256, bicubic; windows padded, never clipped
for _size, _file, _resize, _top1 in (
    ("tiny", "swin_v2_t-b137f0e2.pth", 260, 82.072),
    ("small", "swin_v2_s-637d8ceb.pth", 260, 83.712),
    ("base", "swin_v2_b-781e5279.pth", 272, 84.112),
):
    TAGS.append(
        PretrainedTag(
            f"swinv2_{_size}_window8_256",
            "tv_in1k",
            256,
            1000,
            "ImageNet-1K (torchvision's training)",
            _top1,
            {"torchvision": TORCHVISION + _file},
            crop_pct=256 / _resize,
            overrides={"clip_windows": False, "mask_padding": False},
        )
    )

_BY_NAME = {t.name: t for t in TAGS}
DEFAULT_TAGS = {}  # model -> its first (default) tag, timm's order: Microsoft's weights before torchvision's
for _t in TAGS:
    DEFAULT_TAGS.setdefault(_t.model, _t)


def split_name(name: str) -> tuple[str, str | None]:
    """``"model.tag"`` -> ``("model", "tag")``; a name without a tag -> ``(name, None)``."""
    model, dot, tag = name.partition(".")
    return model, (tag if dot else None)


def find_tag(model: str, tag: str | None) -> PretrainedTag:
    """The released weights ``model.tag`` (the model's default tag when ``tag`` is None); a ``ValueError``
    naming the tags that exist otherwise."""
    if tag is None:
        if model not in DEFAULT_TAGS:
            raise ValueError(f"{model} has no released weights; models with weights: {', '.join(sorted(DEFAULT_TAGS))}")
        return DEFAULT_TAGS[model]
    found = _BY_NAME.get(f"{model}.{tag}")
    if found is None:
        known = [t.tag for t in TAGS if t.model == model]
        hint = f"its tags: {', '.join(known)}" if known else f"{model} has no released weights"
        raise ValueError(f"no released weights {model}.{tag}; {hint} (`swinv2 models --pretrained` lists them)")
    return found


def list_pretrained(pattern: str = "*") -> list[PretrainedTag]:
    """The released weights whose ``model.tag`` matches a shell-style pattern."""
    import fnmatch

    return [t for t in TAGS if fnmatch.fnmatch(t.name, pattern)]


def print_catalogue(pattern: str = "*", as_json: bool = False) -> int:
    """``swinv2 models --pretrained``: each released tag with its sources, size, windows and top-1."""
    import json

    from ..models.registry import get_config

    tags = list_pretrained(pattern if "." in pattern or pattern.endswith("*") else pattern + "*")
    if not tags:
        print(f"no released weights match {pattern!r}")
        return 1
    if not as_json:
        print(f"{'name':<56} {'img':>4} {'window':>6} {'pretrained':>10} {'classes':>7} {'top-1':>6}  sources")
    for tag in tags:
        cfg = get_config(tag.model)
        pws = cfg.pretrained_window_sizes
        windows = ",".join(map(str, pws)) if any(pws) else "-"
        row = {
            "name": tag.name,
            "img_size": tag.img_size,
            "window_size": cfg.window_size,
            "pretrained_window_sizes": windows,
            "num_classes": tag.num_classes,
            "top1": tag.top1,
            "dataset": tag.dataset,
            "sources": tag.sources,
        }
        if as_json:
            print(json.dumps(row))
            continue
        top1 = f"{tag.top1:.1f}" if tag.top1 is not None else "-"
        print(
            f"{tag.name:<56} {tag.img_size:>4} {cfg.window_size:>6} {windows:>10} {tag.num_classes:>7} {top1:>6}  "
            + ", ".join(tag.sources)
        )
    return 0
