"""Video datasets: clip lists in a Kinetics-style CSV (``path,label``), decoded with PyAV or read from
folders of frames, with temporal sampling and multi-view testing; and Moving Fashion-MNIST by default.

A clip is ``(C, T, H, W)`` float, normalised. Training draws one random window of ``frames`` frames
(every ``stride``-th) and a random crop with flips; testing takes ``clips`` evenly spaced windows x
``crops`` spatial crops (the paper's 4 x 5 views on Kinetics) and the model's scores are averaged.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..data.datasets import IMAGENET_MEAN, IMAGENET_STD, ClassificationData
from ..data.decode import MarksUnreadable, UnreadableImage, read_image
from ..data.moving import DIRECTIONS, MovingFashionMNIST
from ..data.moving import MEAN as MOVING_MEAN
from ..data.moving import STD as MOVING_STD

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def read_frames(path: Path) -> torch.Tensor:
    """All frames of a video file (PyAV) or a folder of frame images, ``(T, H, W, 3)`` uint8."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
        if not files:
            raise UnreadableImage(f"{path}: no frame images ({', '.join(FRAME_SUFFIXES)})")
        frames = [read_image(f).permute(1, 2, 0) for f in files]
        if len({f.shape for f in frames}) > 1:
            raise UnreadableImage(f"{path}: frames of different sizes")
        return torch.stack(frames)
    try:
        import av
    except ImportError as exc:
        raise ImportError("decoding video files needs PyAV: pip install 'swinv2[video]'") from exc
    try:
        with av.open(str(path)) as container:
            frames = [torch.from_numpy(f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]
    except (av.FFmpegError, OSError, ValueError) as exc:  # truncated, corrupt, not a video
        raise UnreadableImage(f"{path} is not a readable video ({exc})") from exc
    if not frames:
        raise UnreadableImage(f"{path}: no video frames decoded")
    return torch.stack(frames)


def read_clip_list(csv_path: Path) -> list[tuple[Path, str]]:
    """Rows ``path,label`` (a header row is skipped, so are blank lines); paths relative to the CSV's folder.
    A UTF-8 byte-order mark before the first row is ignored."""
    if not csv_path.is_file():
        raise FileNotFoundError(f"clip list not found: {csv_path}")
    rows = []
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        for i, row in enumerate(csv.reader(f)):
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # a blank line, often the last one
            if not rows and [c.strip().lower() for c in row[:2]] == ["path", "label"]:
                continue
            rows.append(_clip_row(row, f"{csv_path}:{i + 1}", csv_path.parent))
    if not rows:
        raise ValueError(f"{csv_path}: no clips listed")
    return rows


def _clip_row(row: list[str], where: str, root: Path) -> tuple[Path, str]:
    """One ``path,label`` row; ``where`` (file:line) names it in the error."""
    if len(row) < 2:
        raise ValueError(f"{where}: expected 'path,label', got {row!r}")
    path, label = row[0].strip(), row[1].strip()
    if not path or not label:
        empty = " and ".join(n for n, v in (("path", path), ("label", label)) if not v)
        raise ValueError(f"{where}: expected 'path,label' with both filled in, got an empty {empty} in {row!r}")
    return root / path, label


def temporal_starts(length: int, span: int, clips: int) -> list[int]:
    """``clips`` evenly spaced start frames of windows ``span`` frames long in a video of ``length``."""
    room = max(length - span, 0)
    if clips == 1:
        return [room // 2]
    return [round(i * room / (clips - 1)) for i in range(clips)]


@dataclass
class ClipSampling:
    frames: int = 8
    stride: int = 2
    size: int = 224
    clips: int = 1  # testing: temporal views
    crops: int = 1  # testing: spatial views (1 centre, 3 along the long side)
    mean: tuple[float, ...] = IMAGENET_MEAN  # one value per channel; one channel means grey frames
    std: tuple[float, ...] = IMAGENET_STD


class VideoClipDataset(MarksUnreadable, Dataset):
    """Clips listed in a CSV: training samples one random view, testing stacks ``clips x crops`` views
    into ``(V, C, T, H, W)``."""

    def __init__(
        self, csv_path: str | os.PathLike, sampling: ClipSampling, train: bool, classes: list[str] | None = None
    ):
        self.rows = read_clip_list(Path(csv_path))
        self.classes = classes or sorted({label for _, label in self.rows})
        unknown = sorted({label for _, label in self.rows} - set(self.classes))
        if unknown:
            raise ValueError(f"{csv_path}: labels {unknown[:5]} are not among the training classes {self.classes[:10]}")
        self.index = {c: i for i, c in enumerate(self.classes)}
        self.sampling, self.train = sampling, train
        self._init_marks(len(self.rows))

    def __len__(self) -> int:
        return len(self.rows)

    def _sample_path(self, index: int) -> str:
        return str(self.rows[index][0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int] | None:
        path, label = self.rows[i]
        try:
            video = read_frames(path)  # (T, H, W, 3)
        except UnreadableImage:  # skipped by the loader, counted and named at the end of the epoch
            self._mark(i)
            return None
        return (train_view(video, self.sampling) if self.train else test_views(video, self.sampling)), self.index[label]


def train_view(video: torch.Tensor, s: ClipSampling) -> torch.Tensor:
    """One random window of the video, resized, randomly cropped and flipped: ``(C, T, H, W)``."""
    span = (s.frames - 1) * s.stride + 1
    start = int(torch.randint(max(len(video) - span, 0) + 1, (1,)))
    clip = crop_clip(resize_clip(clip_window(video, start, s), s), s.size, random=True)
    return clip.flip(-1) if torch.rand(()) < 0.5 else clip


def test_views(video: torch.Tensor, s: ClipSampling) -> torch.Tensor:
    """``clips`` evenly spaced windows x ``crops`` crops along the long side: ``(V, C, T, H, W)``."""
    span = (s.frames - 1) * s.stride + 1
    views = []
    for start in temporal_starts(len(video), span, s.clips):
        clip = resize_clip(clip_window(video, start, s), s)
        positions = [1] if s.crops == 1 else list(range(s.crops))
        views += [crop_clip(clip, s.size, p, crops=max(s.crops, 3)) for p in positions]
    return torch.stack(views)


def clip_window(video: torch.Tensor, start: int, s: ClipSampling) -> torch.Tensor:
    """Frames ``start, start + stride, ...`` as float ``(C, T, H, W)`` in [0, 1] (grey when the sampling
    has one channel); short videos repeat their last frame."""
    idx = (start + torch.arange(s.frames) * s.stride).clamp(max=len(video) - 1)
    clip = video[idx].permute(3, 0, 1, 2).float() / 255
    return clip.mean(0, keepdim=True) if len(s.mean) == 1 else clip


def resize_clip(clip: torch.Tensor, s: ClipSampling) -> torch.Tensor:
    """Shorter side to ``s.size`` (antialiased), then normalised by ``s.mean`` / ``s.std``."""
    _, _, h, w = clip.shape
    scale = s.size / min(h, w)
    out = (max(s.size, round(h * scale)), max(s.size, round(w * scale)))
    clip = F.interpolate(clip.transpose(0, 1), size=out, mode="bilinear", antialias=True, align_corners=False)
    mean, std = (torch.tensor(v).view(-1, 1, 1, 1) for v in (s.mean, s.std))
    return (clip.transpose(0, 1) - mean) / std


def crop_clip(clip: torch.Tensor, size: int, position: int = 1, crops: int = 3, random: bool = False) -> torch.Tensor:
    """A ``size`` square at ``position`` of ``crops`` evenly spaced along the long side (or anywhere)."""
    room_y, room_x = clip.shape[-2] - size, clip.shape[-1] - size
    if random:
        y, x = (int(torch.randint(r + 1, (1,))) for r in (room_y, room_x))
    else:
        frac = position / (crops - 1)
        y, x = round(room_y * frac), round(room_x * frac)
    return clip[..., y : y + size, x : x + size]


class Standardize:
    """``(x - mean) / std`` (a class, so that data-loader workers can pickle it)."""

    def __init__(self, mean: float, std: float):
        self.mean, self.std = mean, std

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def moving_fashion_mnist_data(frames: int, size: int, train_count: int, test_count: int, seed: int = 0):
    """The default video data: Moving Fashion-MNIST, normalised, in the classification trainer's terms."""
    common = dict(frames=frames, size=size, seed=seed, transform=Standardize(MOVING_MEAN[0], MOVING_STD[0]))
    train = MovingFashionMNIST("train", train_count, **common)
    val = MovingFashionMNIST("test", test_count, **common)
    return ClassificationData(train, val, DIRECTIONS, 1, MOVING_MEAN, MOVING_STD, "moving-fashion-mnist")


def moving_fashion_mnist_val(frames: int, size: int, count: int, seed: int = 0) -> MovingFashionMNIST:
    """Moving Fashion-MNIST's test clips alone, normalised as training evaluated them."""
    transform = Standardize(MOVING_MEAN[0], MOVING_STD[0])
    return MovingFashionMNIST("test", count, frames=frames, size=size, seed=seed, transform=transform)
