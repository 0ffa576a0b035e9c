"""Video SwinV2: 3-D windows, torchvision swin3d parity, inflation from an image model, data, training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.models.video.swin_transformer import SwinTransformer3d

from helpers import needs_fmnist, randomize
from swinv2 import create_model
from swinv2.cli import main
from swinv2.data.moving import MovingFashionMNIST
from swinv2.layers.window import attention_mask as attention_mask_2d
from swinv2.layers.window_nd import attention_mask, pad_to_window, window_partition, window_reverse
from swinv2.video.config import VideoSwinV2Config
from swinv2.video.convert import TORCHVISION_V1, from_torchvision_video
from swinv2.video.data import ClipSampling, VideoClipDataset, read_frames, temporal_starts
from swinv2.video.inflate import inflate
from swinv2.video.model import VideoSwinV2
from swinv2.video.registry import create_video_model, get_video_config
from swinv2.weights.checkpoint import read_checkpoint, save_weights
from swinv2.weights.convert import to_official

SMALL = {"embed_dim": 16, "num_heads": (1, 2, 2, 4), "depths": (2, 2, 2, 2), "cpb_hidden": 16}


@pytest.mark.parametrize(("size", "window"), [((4, 8, 12), (2, 4, 4)), ((3, 5, 7), (2, 4, 3)), ((2, 6, 6), (2, 6, 6))])
def test_3d_window_partition_round_trip(size, window):
    x = torch.randn(2, *size, 5)
    padded, pads = pad_to_window(x, window)
    assert padded.shape[1:4] == tuple(s + p for s, p in zip(size, pads)) and all(
        (s + p) % w == 0 for s, p, w in zip(size, pads, window)
    )
    windows = window_partition(padded, window)
    assert windows.shape == (2 * np.prod([(s + p) // w for s, p, w in zip(size, pads, window)]), np.prod(window), 5)
    # each window holds one contiguous block: its first token is the block's corner
    assert torch.equal(windows[0, 0], padded[0, 0, 0, 0]) and torch.equal(
        windows[0, -1], padded[(0, *(w - 1 for w in window))]
    )
    assert torch.equal(window_reverse(windows, window, padded.shape[1:4]), padded)
    shifted = torch.roll(padded, (-1, -2, -1), dims=(1, 2, 3))
    assert torch.equal(torch.roll(shifted, (1, 2, 1), dims=(1, 2, 3)), padded)


def test_3d_mask_with_one_frame_is_the_2d_mask():
    for shift, valid in (((2, 2), (8, 8)), ((0, 0), (7, 6)), ((2, 1), (6, 5))):
        m2 = attention_mask_2d((8, 8), (4, 2 if shift[1] else 4), shift, valid, True)
        m3 = attention_mask(
            (1, 8, 8), (1, 4, 2 if shift[1] else 4), (0, *shift), (1, *valid), True, torch.device("cpu")
        )
        assert torch.equal(m2, m3)


def test_3d_shift_mask_separates_time_regions():
    mask = attention_mask((4, 2, 2), (2, 2, 2), (1, 0, 0), (4, 2, 2), True, torch.device("cpu"))
    # last temporal window after rolling by -1: frames 3 and 0 (wrapped) must not attend to each other
    last = mask[-1]
    frame = torch.arange(8) // 4  # token -> frame within the window (t, h, w order)
    assert torch.equal(last != 0, frame[:, None] != frame[None, :])
    assert not mask[0].any()


def _tv_model(window):
    return SwinTransformer3d(
        patch_size=[2, 4, 4],
        embed_dim=16,
        depths=[2, 2, 2, 2],
        num_heads=[1, 2, 2, 4],
        window_size=window,
        num_classes=7,
    ).eval()


@pytest.mark.parametrize(
    ("window", "img", "frames", "shapes"),
    [
        ([2, 4, 4], 128, 8, [(2, 3, 8, 128, 128), (1, 3, 10, 100, 120)]),  # padding in time and space
        ([8, 7, 7], 224, 16, [(1, 3, 16, 224, 224), (1, 3, 8, 224, 224)]),  # swin3d_t's window; time clipped
    ],
)
def test_v1_switches_reproduce_torchvision_swin3d(window, img, frames, shapes):
    """Video Swin (V1) on converted, fully randomised weights: the 3-D windows, shifts and table are right."""
    tv = randomize(_tv_model(window))
    cfg = VideoSwinV2Config(
        img_size=img, num_frames=frames, window_size=tuple(window), num_classes=7, **SMALL, **TORCHVISION_V1
    )
    ours = VideoSwinV2(cfg).eval()
    ours.load_state_dict(from_torchvision_video(tv.state_dict()))
    for shape in shapes:
        x = torch.randn(*shape)
        with torch.no_grad():
            diff = (tv(x) - ours(x)).abs()
        print(f"swin3d {window} {shape}: max |diff| {diff.max():.2e}  mean {diff.mean():.2e}")
        assert diff.max() <= 1e-4


@pytest.mark.parametrize("position_bias", ["log_cpb", "table"])
def test_inflated_model_reproduces_the_image_model_on_still_clips(position_bias):
    """A clip of identical frames: every time step of the video features is the image model's features."""
    torch.set_default_dtype(torch.float64)  # exact up to rounding, which random weights amplify in fp32
    try:
        image = randomize(create_model("swinv2_femto_window8_128", **SMALL, position_bias=position_bias)).eval()
        video = inflate(image, num_frames=8, window_size=(2, 8, 8)).eval()
        frame = torch.randn(2, 3, 96, 96)
        with torch.no_grad():
            ref, ours = (
                image.forward_features(frame),
                video.forward_features(frame[:, :, None].expand(-1, -1, 8, -1, -1)),
            )
            logits = (image(frame) - video.forward_head(ours)).abs().max()
    finally:
        torch.set_default_dtype(torch.float32)
    diff = (ours - ref[:, None]).abs()
    print(
        f"inflated {position_bias}: features max |diff| {diff.max():.2e}  mean {diff.mean():.2e}; logits {logits:.2e}"
    )
    assert video.load_report.clean
    assert ours.shape[1] == 4 and diff.max() < 1e-9 and logits < 1e-9
    assert video.cfg.pretrained_window_sizes == ((2, 8, 8),) * 3 + ((2, 4, 4),)  # space from the image model


def test_inflation_from_a_file_at_another_window(tmp_path):
    image = randomize(create_model("swinv2_femto_window8_128", **SMALL))
    save_weights(image, tmp_path / "image.safetensors")
    video = create_video_model(
        "swinv2_video_pico_window4x8_64", pretrained=tmp_path / "image.safetensors", window_size=(4, 16, 16)
    )
    assert video.cfg.embed_dim == 16 and video.cfg.window_size == (4, 16, 16)
    assert video.cfg.pretrained_window_sizes[0] == (4, 8, 8)  # Log-CPB still normalises by the image window
    assert video.stages[0].blocks[0].attn.rel_pos.mlp[0].weight[:, 0].abs().sum() == 0  # time column zero
    out = video(torch.randn(1, 1, 8, 64, 64))  # the grey pico model: input channels adapted
    assert out.shape == (1, 8)


def test_image_files_of_other_layouts_inflate_through_inflate_only(tmp_path):
    image = randomize(create_model("swinv2_femto_window8_128")).eval()
    torch.save({"model": to_official(image.state_dict())}, tmp_path / "official.pth")  # no config inside
    with pytest.raises(ValueError, match=r"image model without this project's config .* swinv2.video.inflate"):
        create_video_model("swinv2_video_pico_window4x8_64", pretrained=tmp_path / "official.pth")
    video = inflate(tmp_path / "official.pth", image_name="swinv2_femto_window8_128")
    assert video.load_report.clean and video.cfg.embed_dim == image.cfg.embed_dim
    conv = video.patch_embed.proj.weight  # repeated over the temporal patch, divided by its length
    assert conv.shape[2] == video.cfg.patch_size[0] and torch.allclose(conv.sum(2), image.patch_embed.proj.weight)


def test_video_model_training_step_and_bad_input():
    model = create_video_model("swinv2_video_pico_window4x8_64", cpb_hidden=16)
    clips, labels = torch.randn(2, 1, 8, 64, 64), torch.tensor([1, 5])
    loss = torch.nn.functional.cross_entropy(model(clips), labels)
    loss.backward()
    assert torch.isfinite(loss) and model.patch_embed.proj.weight.grad.abs().sum() > 0
    assert model(torch.randn(1, 1, 5, 37, 50)).shape == (1, 8)  # any clip length and size (padding)
    with pytest.raises(ValueError, match=r"\(B, 1, T, H, W\)"):
        model(torch.randn(2, 1, 64, 64))
    with pytest.raises(ValueError, match="did you mean"):
        get_video_config("swinv2_video_pico_window4x8_46")


@needs_fmnist
def test_moving_fashion_mnist_is_deterministic_and_moves():
    data = MovingFashionMNIST("test", count=20)
    clip, label = data[3]
    again, label2 = MovingFashionMNIST("test", count=20)[3]
    assert torch.equal(clip, again) and label == label2 and clip.shape == (1, 8, 64, 64)
    step = [(0, 3), (-3, 3), (-3, 0), (-3, -3), (0, -3), (3, -3), (3, 0), (3, 3)][label]
    for k in range(7):  # each frame is the previous one moved by the direction's step (on a torus)
        assert torch.equal(clip[0, k + 1], clip[0, k].roll(step, dims=(0, 1)))
    labels = [data[i][1] for i in range(20)]
    assert len(set(labels)) > 3


def _write_frames(folder, frames: int, value: int):
    from PIL import Image

    folder.mkdir(parents=True)
    for k in range(frames):
        Image.fromarray(np.full((40, 60, 3), value + k, np.uint8)).save(folder / f"{k:04d}.png")


def test_clip_folders_in_a_csv_with_multi_view_testing(tmp_path):
    _write_frames(tmp_path / "a", 20, 10)
    _write_frames(tmp_path / "b", 5, 100)
    (tmp_path / "train.csv").write_text("path,label\na,jump\nb,run\n")
    sampling = ClipSampling(frames=4, stride=2, size=32, clips=2, crops=3)
    train = VideoClipDataset(tmp_path / "train.csv", sampling, train=True)
    clip, label = train[0]
    assert clip.shape == (3, 4, 32, 32) and train.classes == ["jump", "run"] and label == 0
    views, label = VideoClipDataset(tmp_path / "train.csv", sampling, train=False, classes=train.classes)[1]
    assert views.shape == (6, 3, 4, 32, 32) and label == 1
    assert temporal_starts(20, 7, 3) == [0, 6, 13] and temporal_starts(5, 7, 2) == [0, 0]
    (tmp_path / "bad.csv").write_text("a,swim\n")
    with pytest.raises(ValueError, match="not among the training classes"):
        VideoClipDataset(tmp_path / "bad.csv", sampling, train=False, classes=train.classes)


def test_cli_video_train_on_a_clip_folder_with_switches(tmp_path, capsys):
    for i, name in enumerate("abcd"):
        _write_frames(tmp_path / "clips" / name, 12, 20 * i)
    rows = "path,label\na,jump\nb,run\nc,jump\nd,run\n"
    for split in ("train", "val"):
        (tmp_path / "clips" / f"{split}.csv").write_text(rows)
    out = tmp_path / "run"
    flags = ["--data", str(tmp_path / "clips"), "--img-size", "32", "--num-frames", "4", "--epochs", "1"]
    args = ["video", "train", *flags, "--batch-size", "2", "--skip-nonfinite", "--output", str(out), "--no-progress"]
    assert main([*args, "--window-size", "4"]) == 0, capsys.readouterr().err
    config = json.loads((out / "config.json").read_text())
    assert config["window_size"][-1] == 4  # the spatial window given
    assert main(["video", "train", "--resume", str(out), "--epochs", "2", "--no-progress"]) == 0  # read back
    assert config["hflip"] == 0.0 and config["skip_nonfinite"] is True and config["data"] == str(tmp_path / "clips")
    assert 0 <= json.loads((out / "summary.json").read_text())["top1"] <= 100
    assert json.loads(read_checkpoint(out / "model.safetensors")[1]["classes"]) == ["jump", "run"]
    with pytest.raises(SystemExit) as stop:  # a switch takes no value, as in `swinv2 train`
        main(["video", "train", "--skip-nonfinite", "off"])
    assert stop.value.code == 2 and "unrecognized arguments: off" in capsys.readouterr().err


def test_video_files_decode_with_pyav(tmp_path):
    av = pytest.importorskip("av")
    path = tmp_path / "clip.mp4"
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for k in range(12):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 20 * k, np.uint8), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    frames = read_frames(path)
    assert frames.shape == (12, 48, 64, 3)
    assert frames[-1].float().mean() > frames[0].float().mean() + 100  # brightness ramps up as written


def test_unreadable_clips_are_skipped_and_named(tmp_path):
    from swinv2.data.datasets import ReadableCollate

    _write_frames(tmp_path / "good", 6, 10)
    _write_frames(tmp_path / "cut", 6, 10)
    frame = tmp_path / "cut" / "0002.png"
    frame.write_bytes(frame.read_bytes()[:30])  # one truncated frame spoils the clip
    (tmp_path / "empty").mkdir()
    (tmp_path / "noise.mp4").write_bytes(bytes(range(256)) * 4)
    rows = "path,label\ngood,a\ncut,a\nempty,b\nnoise.mp4,b\n"
    (tmp_path / "train.csv").write_text(rows)
    data = VideoClipDataset(tmp_path / "train.csv", ClipSampling(frames=4, stride=1, size=16), train=True)
    samples = [data[i] for i in range(len(data))]
    assert samples[0] is not None and samples[1:] == [None, None, None]
    assert [Path(p).name for p in data.take_unreadable()] == ["cut", "empty", "noise.mp4"]
    assert data.take_unreadable() == []  # taken: the next epoch counts afresh
    clips, labels = ReadableCollate(data)(samples)
    assert clips.shape == (1, 3, 4, 16, 16) and labels.tolist() == [0]


@needs_fmnist
def test_cli_video_train_eval_single_frame(tmp_path, capsys):
    out = tmp_path / "run"
    args = [
        "video",
        "train",
        "--output",
        str(out),
        "--epochs",
        "1",
        "--train-limit",
        "64",
        "--val-limit",
        "32",
        "--batch-size",
        "16",
        "--no-progress",
    ]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert 0 <= summary["top1"] <= 100 and 0 <= summary["top1_single_frame"] <= 100
    capsys.readouterr()
    assert main(["video", "eval", str(out), "--single-frame", "--val-limit", "16"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["single_frame"] is True and 0 <= result["top1"] <= 100
    assert main(["video", "train", "--test-crops", "2", "--output", str(tmp_path / "x")]) == 2  # refused up front
    assert not (tmp_path / "x").exists()


def _video_run(tmp_path, classes=("jump", "run"), val_labels=None) -> Path:
    """A finished video run (untrained pico model, 4 frames of 32 px) on a folder of two frame clips."""
    from swinv2.data.datasets import IMAGENET_MEAN, IMAGENET_STD
    from swinv2.video.train import VideoRecipe

    clips = tmp_path / "clips"
    for i, name in enumerate("ab"):
        _write_frames(clips / name, 6, 30 * i)
    (clips / "train.csv").write_text("path,label\n" + "".join(f"{n},{c}\n" for n, c in zip("ab", classes)))
    val = val_labels or classes
    (clips / "val.csv").write_text("path,label\n" + "".join(f"{n},{c}\n" for n, c in zip("ab", val)))
    run = tmp_path / "run"
    run.mkdir()
    model = create_video_model(
        "swinv2_video_pico_window4x8_64", img_size=32, num_frames=4, in_chans=3, num_classes=len(classes)
    )
    meta = {"classes": json.dumps(list(classes)), "mean": json.dumps(IMAGENET_MEAN), "std": json.dumps(IMAGENET_STD)}
    save_weights(model, run / "model.safetensors", meta)
    VideoRecipe(data=str(clips), img_size=32, num_frames=4, batch_size=4, amp="none").save(run / "config.json")
    return run


def _eval_json(capsys, *args) -> dict:
    assert main(["video", "eval", *map(str, args)]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_cli_video_eval_skips_unreadable_clips(tmp_path, capsys):
    run = _video_run(tmp_path)
    clips = tmp_path / "clips"
    (clips / "noise.mp4").write_bytes(bytes(range(256)) * 4)
    (clips / "val.csv").write_text("path,label\na,jump\ngone,run\nnoise.mp4,jump\nb,run\n")
    result = _eval_json(capsys, run, "--test-clips", "2", "--test-crops", "3")
    assert result["clips"] == 4 and result["unreadable_clips"] == 2 and result["views"] == 6
    assert 0 <= result["top1"] <= 100


def test_cli_video_eval_maps_labels_to_the_runs_classes(tmp_path, capsys):
    from swinv2.data.datasets import IMAGENET_MEAN, IMAGENET_STD
    from swinv2.video.train import VideoRecipe, eval_data

    run = _video_run(tmp_path)
    other = tmp_path / "other"
    for name in ("train", "val"):  # only "run" clips: a folder of its own would call that class 0
        other.mkdir(exist_ok=True)
        (other / f"{name}.csv").write_text(f"path,label\n{tmp_path / 'clips' / 'b'},run\n")
    recipe = VideoRecipe(data=str(other), img_size=32, num_frames=4)
    model = create_video_model("swinv2_video_pico_window4x8_64", img_size=32, num_frames=4, in_chans=3, num_classes=2)
    val, views = eval_data(recipe, model, ["jump", "run"], IMAGENET_MEAN, IMAGENET_STD)
    assert val[0][1] == 1 and views == 1
    assert _eval_json(capsys, run, "--data", other)["clips"] == 1
    assert main(["video", "predict", str(run), str(tmp_path / "clips" / "a"), "--clips", "2", "--topk", "5"]) == 0
    top = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["top"]
    assert sorted(name for name, _ in top) == ["jump", "run"]  # the run's class names, topk capped at 2
    (other / "val.csv").write_text("path,label\nb,walk\nb,swim\n")  # renamed or new classes: refused by name
    assert main(["video", "eval", str(run), "--data", str(other)]) == 2
    err = capsys.readouterr().err
    assert "['swim', 'walk']" in err and "['jump', 'run']" in err


@pytest.mark.parametrize(
    "flags",
    [
        ["eval", "--test-clips", "0"],
        ["eval", "--test-crops", "0"],
        ["eval", "--test-crops", "2"],
        ["eval", "--val-limit", "-1"],
        ["eval", "--val-limit", "0"],
        ["eval", "--window-size", "0"],
        ["predict", "clip", "--clips", "0"],
        ["predict", "clip", "--clips", "-2"],
        ["predict", "clip", "--topk", "0"],
        ["predict", "clip", "--topk", "-1"],
    ],
)
def test_cli_video_eval_and_predict_refuse_bad_counts(tmp_path, capsys, flags):
    action, *rest = flags
    with pytest.raises(SystemExit) as stop:
        main(["video", action, str(tmp_path / "run"), *rest])
    assert stop.value.code == 2 and f"argument {rest[-2]}:" in capsys.readouterr().err  # argparse names it


@needs_fmnist
def test_video_eval_data_reports_the_views_used_on_moving_fashion_mnist():
    from swinv2.data.moving import DIRECTIONS
    from swinv2.video.train import VideoRecipe, eval_data

    recipe = VideoRecipe(test_clips=4, test_crops=3, val_limit=5)
    model = create_video_model("swinv2_video_pico_window4x8_64")
    val, views = eval_data(recipe, model, list(DIRECTIONS), (0.5,), (0.5,))
    assert views == 1 and len(val) == 5 and val[0][0].shape == (1, 8, 64, 64)
    with pytest.raises(ValueError, match="not Moving Fashion-MNIST's directions"):
        eval_data(recipe, model, ["jump", "run"], (0.5,), (0.5,))


def test_clip_list_bom_blank_lines_and_empty_fields(tmp_path):
    from swinv2.video.data import read_clip_list

    path = tmp_path / "train.csv"
    path.write_bytes("path,label\na,jump\n\nb,run\n\n".encode("utf-8-sig"))
    assert read_clip_list(path) == [(tmp_path / "a", "jump"), (tmp_path / "b", "run")]
    for rows, empty in (("a,jump\n,run\n", "path"), ("a,jump\nb, \n", "label"), ("a,jump\n,\n", "path and label")):
        path.write_text(rows)
        with pytest.raises(ValueError, match=rf"train.csv:2: expected 'path,label' .* empty {empty} in"):
            read_clip_list(path)


def test_video_config_refuses_non_positive_sizes(tmp_path, capsys):
    with pytest.raises(ValueError, match="img_size must be >= 1"):
        VideoSwinV2Config(img_size=0)
    with pytest.raises(ValueError, match="img_size must be >= 1"):
        VideoSwinV2Config(img_size=(32, -1))
    _video_run(tmp_path)
    args = ["video", "train", "--data", str(tmp_path / "clips"), "--img-size", "0", "--num-frames", "4"]
    assert main([*args, "--output", str(tmp_path / "zero"), "--no-progress"]) == 2
    assert "img_size must be >= 1" in capsys.readouterr().err


def test_pretrained_image_weights_of_another_patch_size_are_refused(tmp_path, caplog):
    image = randomize(create_model("swinv2_femto_window8_128", patch_size=2, **SMALL))
    save_weights(image, tmp_path / "image.safetensors")
    with pytest.raises(ValueError, match=r"does not fit video model .*mismatched: patch_embed\.proj\.weight"):
        create_video_model("swinv2_video_pico_window4x8_64", pretrained=tmp_path / "image.safetensors")
    with caplog.at_level("WARNING", logger="swinv2"):
        video = inflate(image, strict=False, num_frames=8, window_size=(2, 8, 8))
    assert video.load_report.mismatched and "weights left random" in caplog.text
