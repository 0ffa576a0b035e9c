"""Bad input at the boundary, each refused by name before any work or run folder: another command's run
folder, weights that would only partly initialise a model, hand-edited recipes, data no loader could use,
numbers a tool cannot honour; resource failures end in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from faults import broken_image_folder
from swinv2 import create_model
from swinv2.cli import main
from swinv2.data.decode import UnreadableImage, read_image
from swinv2.dense.recipe import DenseRecipe
from swinv2.models.simmim import MaskGenerator
from swinv2.runs import WrongRunError, expect_run, run_kind
from swinv2.train.pretrain import PretrainRecipe
from swinv2.train.recipe import TrainRecipe
from swinv2.video.train import VideoRecipe
from swinv2.weights.checkpoint import save_weights

RECIPES = {
    "classify": TrainRecipe,
    "pretrain": PretrainRecipe,
    "video": VideoRecipe,
    "detect": lambda: DenseRecipe(task="detect"),
    "segment": lambda: DenseRecipe(task="segment"),
}
WRITERS = {
    "classify": "swinv2 train",
    "pretrain": "swinv2 pretrain",
    "video": "swinv2 video train",
    "detect": "swinv2 detect train",
    "segment": "swinv2 segment train",
}
# command line (RUN stands for the folder) -> the one kind of run it takes
USES = {
    ("eval", "RUN"): "classify",
    ("predict", "RUN", "picture.png"): "classify",
    ("video", "eval", "RUN"): "video",
    ("video", "predict", "RUN", "clip.mp4"): "video",
    ("detect", "eval", "RUN"): "detect",
    ("detect", "predict", "RUN", "picture.png", "--output", "OUT"): "detect",
    ("segment", "eval", "RUN"): "segment",
    ("segment", "predict", "RUN", "picture.png", "--output", "OUT"): "segment",
    ("train", "--resume", "RUN"): "classify",
    ("pretrain", "--resume", "RUN"): "pretrain",
    ("video", "train", "--resume", "RUN"): "video",
    ("detect", "train", "--resume", "RUN"): "detect",
    ("segment", "train", "--resume", "RUN"): "segment",
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """One folder per kind holding the config.json its command writes (the recipe is all a kind needs)."""
    root = tmp_path_factory.mktemp("runs")
    folders = {}
    for kind, make in RECIPES.items():
        folders[kind] = root / kind
        folders[kind].mkdir()
        make().save(folders[kind] / "config.json")
    return folders


def test_each_command_s_recipe_names_its_kind(runs, tmp_path):
    for kind, folder in runs.items():
        assert run_kind(folder) == kind
        assert run_kind(folder / "model.safetensors") == kind  # a file in the folder stands for its run
    (tmp_path / "config.json").write_text('{"architecture": "SwinV2", "config": {}}')  # save_pretrained's
    assert run_kind(tmp_path) is None
    (tmp_path / "config.json").write_text("{damaged")
    assert run_kind(tmp_path) is None  # the recipe loader names the damage
    assert run_kind(tmp_path / "nowhere") is None


@pytest.mark.parametrize("argv", list(USES), ids=lambda argv: " ".join(argv[:2]))
def test_commands_refuse_other_commands_runs_by_name(argv, runs, tmp_path, capsys):
    taken = USES[argv]
    for kind, folder in runs.items():
        if kind == taken:
            continue
        files_before = sorted(p.name for p in folder.iterdir())
        line = [str(folder) if a == "RUN" else str(tmp_path / "out") if a == "OUT" else a for a in argv]
        assert main(line) == 2, (line, kind)
        err = capsys.readouterr().err
        assert f"{folder} is " in err and f"(written by `{WRITERS[kind]}`)" in err, (line, err)
        assert "Traceback" not in err
        assert sorted(p.name for p in folder.iterdir()) == files_before and not (tmp_path / "out").exists()


def test_resume_refusal_points_at_the_right_command(runs, capsys):
    assert main(["segment", "train", "--resume", str(runs["detect"])]) == 2
    assert f"Resume it with `swinv2 detect train --resume {runs['detect']}`" in capsys.readouterr().err
    assert main(["eval", str(runs["pretrain"])]) == 2
    assert f"Fine-tune it first: `swinv2 train --pretrained {runs['pretrain']}`" in capsys.readouterr().err


def test_pretrained_must_be_a_run_whose_weights_fit(runs):
    for kind in ("classify", "pretrain"):
        for make in (TrainRecipe, PretrainRecipe, VideoRecipe, lambda **kw: DenseRecipe(task="segment", **kw)):
            make(pretrained=str(runs[kind]))  # accepted: image weights start every kind of run
    VideoRecipe(pretrained=str(runs["video"]))  # a video run continues as video
    for kind in ("video", "detect", "segment"):
        with pytest.raises(WrongRunError, match="`swinv2 train --pretrained` takes an image classification run"):
            TrainRecipe(pretrained=str(runs[kind]))
        with pytest.raises(WrongRunError, match="`swinv2 detect train --pretrained`"):
            DenseRecipe(task="detect", pretrained=str(runs[kind]))
    with pytest.raises(WrongRunError, match="video classification run"):
        VideoRecipe(pretrained=str(runs["detect"]))


def test_expect_run_lets_everything_else_through(runs, tmp_path):
    expect_run(None, ("classify",), "x")
    expect_run(tmp_path / "weights.safetensors", ("classify",), "x")  # not in a run folder: the loader decides
    expect_run(runs["detect"] / "weights.pth", ("classify",), "x")  # a file the run did not write is its own
    with pytest.raises(WrongRunError):
        expect_run(runs["detect"] / "checkpoint-0001.pt", ("classify",), "x")


def _train_from(weights, tmp_path, capsys, model: str = "swinv2_pico_window7_28") -> str:
    out = tmp_path / "run"
    argv = ["train", "--model", model, "--pretrained", str(weights), "--output", str(out), "--epochs", "1"]
    assert main([*argv, "--train-limit", "8", "--val-limit", "8", "--no-progress"]) == 2
    assert not out.exists()
    return capsys.readouterr().err


def test_weights_of_a_deeper_or_wider_model_are_refused(tmp_path, capsys):
    deeper = tmp_path / "deeper.safetensors"
    save_weights(create_model("swinv2_pico_window7_28", depths=(2, 2, 4)), deeper)
    err = _train_from(deeper, tmp_path, capsys)
    assert "does not fit swinv2_pico_window7_28: 0 of the model's tensors would keep random values and" in err
    assert "unexpected: stages.2.blocks.2." in err
    wider = tmp_path / "wider.safetensors"
    save_weights(create_model("swinv2_pico_window7_28", embed_dim=48), wider)
    assert "mismatched: " in _train_from(wider, tmp_path, capsys)


def test_swin_v1_weights_are_named_as_such(tmp_path, capsys):
    timm = pytest.importorskip("timm")
    v1 = timm.models.swin_transformer.SwinTransformer(
        img_size=28, patch_size=4, in_chans=1, embed_dim=32, depths=(2, 2, 2), num_heads=(1, 2, 4), window_size=7
    )  # the pico model's shape, V1's attention
    path = tmp_path / "swin_v1.pth"
    torch.save(v1.state_dict(), path)
    err = _train_from(path, tmp_path, capsys)
    assert "Swin Transformer V1 weights, which SwinV2 cannot start from" in err


def test_simmim_encoders_and_other_class_counts_still_start_runs(tmp_path):
    from swinv2.train.loop import build_model

    encoder = create_model("swinv2_pico_window7_28", num_classes=0)  # what pretraining writes: no head
    path = tmp_path / "encoder.safetensors"
    save_weights(encoder, path)
    model = build_model(TrainRecipe(pretrained=str(path)), _data(10))
    assert sorted(model.load_report.missing) == ["head.fc.bias", "head.fc.weight"]
    five = tmp_path / "five.safetensors"
    save_weights(create_model("swinv2_pico_window7_28", num_classes=5), five)
    assert build_model(TrainRecipe(pretrained=str(five)), _data(10)).load_report.adapted


def _data(classes: int):
    from types import SimpleNamespace

    return SimpleNamespace(in_chans=1, classes=[str(i) for i in range(classes)])


def test_masks_that_hide_every_cell_are_refused(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"gives 1 x 1 cells, and masking 0\.5 of them hides all 1"):
        MaskGenerator(28, 32, 2, 0.5)
    with pytest.raises(ValueError, match=r"gives 2 x 2 cells, and masking 0\.8 of them hides all 4"):
        MaskGenerator(28, 16, 2, 0.8)
    assert MaskGenerator(28, 16, 2, 0.7)(4).float().mean() > 0  # 3 of 4 cells: a quarter stays visible
    out = tmp_path / "pre"
    assert main(["pretrain", "--mask-patch-size", "32", "--output", str(out), "--no-progress"]) == 2
    assert "use a smaller mask patch or ratio" in capsys.readouterr().err and not out.exists()


# ---------------------------------------------------------------------------------- files and folders
def _saved_run(tmp_path, data=None):
    """A run folder as `swinv2 train` leaves it (recipe, weights with classes and preprocessing)."""
    from swinv2.models.preprocess import Preprocessing

    run = tmp_path / "run"
    run.mkdir()
    TrainRecipe(output=str(run), data=data).save(run / "config.json")
    model = create_model("swinv2_pico_window7_28", num_classes=2, in_chans=1)
    prep = Preprocessing.for_model(model.cfg, mean=(0.3,), std=(0.2,))
    model.save_pretrained(tmp_path / "saved", preprocessing=prep, classes=["a", "b"])
    (tmp_path / "saved" / "model.safetensors").rename(run / "model.safetensors")
    return run


def test_convert_keeps_this_project_s_metadata_and_never_overwrites_its_source(tmp_path, capsys):
    from swinv2.weights.checkpoint import read_checkpoint

    run = _saved_run(tmp_path)
    before = (run / "model.safetensors").read_bytes()
    assert main(["convert", str(run / "model.safetensors"), str(run / "model.safetensors")]) == 2
    assert "is SRC's own file" in capsys.readouterr().err and (run / "model.safetensors").read_bytes() == before
    out = tmp_path / "converted.safetensors"
    assert main(["convert", str(run), str(out), "--model", "swinv2_pico_window7_28", "--in-chans", "1",
                 "--num-classes", "2"]) == 0  # fmt: skip
    _, meta = read_checkpoint(out)
    _, original = read_checkpoint(run)
    for key in ("classes", "preprocessing"):
        assert meta[key] == original[key], key
    blocked = tmp_path / "file"
    blocked.write_text("")
    assert main(["convert", str(run), str(blocked / "x.safetensors")]) == 2
    assert f"{blocked} is a file, expected a folder" in capsys.readouterr().err


def test_files_that_are_no_checkpoint_are_named_so_without_unsafe_advice(tmp_path, capsys):
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    assert main(["eval", str(text)]) == 2
    assert f"{text} is not a checkpoint (expected a .safetensors file" in capsys.readouterr().err
    cut = tmp_path / "cut.pt"
    torch.save({"w": torch.zeros(1000)}, cut)
    cut.write_bytes(cut.read_bytes()[:2000])
    assert main(["eval", str(cut)]) == 2
    err = capsys.readouterr().err
    assert "could not be read as a weights-only checkpoint" in err and "weights_only=False" not in err


def test_predict_names_a_folder_given_for_images(tmp_path, capsys):
    run = _saved_run(tmp_path)
    assert main(["predict", str(run), str(tmp_path)]) == 2
    assert f"{tmp_path} is a folder; give the image files in it" in capsys.readouterr().err


def test_eval_defaults_to_the_run_s_own_data_and_counts_what_it_read(tmp_path, capsys):
    from PIL import Image

    data = tmp_path / "data"
    for cls in ("a", "b"):
        (data / "val" / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("L", (28, 28), 40 + 150 * (cls == "b")).save(data / "val" / cls / f"{i}.png")
    (data / "val" / "a" / "broken.png").write_text("not an image")
    run = _saved_run(tmp_path, data=str(data))
    assert main(["eval", str(run)]) == 0  # Fashion-MNIST's 10 classes would be refused for this 2-class model
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["images"] == 6 and result["unreadable_files"] == 1


def test_a_classifier_needs_two_classes_a_simmim_folder_does_not(tmp_path, capsys):
    from PIL import Image

    data = tmp_path / "data"
    for split in ("train", "val"):
        (data / split / "all").mkdir(parents=True)
        for i in range(4):
            Image.new("L", (28, 28), 20 * i).save(data / split / "all" / f"{i}.png")
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--output", str(out), "--no-progress"]) == 2
    assert "has 1 class; a classifier needs at least 2 class folders" in capsys.readouterr().err
    assert not out.exists()
    argv = ["pretrain", "--data", str(data), "--img-size", "28", "--epochs", "1", "--output", str(out)]
    assert main([*argv, "--no-progress"]) == 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["plan", "--model", "swinv2_pico_window7_28", "--batch-size", "100000000000"], "plans go up to 65536 images"),
        (["plan", "--model", "swinv2_pico_window7_28", "--img-size", "1000000000"], "and 32768 px"),
        (["bench-memory", "--model", "swinv2_pico_window7_28"], "timm has no swinv2_pico_window7_28"),
        (["bench-memory", "--batch-size", "0"], "expected a whole number >= 1, got 0"),
        (["bench-max-res", "--device", "cpu", "--step", "0"], "expected a whole number >= 1, got 0"),
        (["bench-max-res", "--device", "cpu", "--budget-s", "-1"], "--budget-s"),
        (["export", "--format", "onnx", "--output", "x.onnx", "--tolerance", "-1"], "--tolerance"),
    ],
)
def test_tools_refuse_numbers_they_cannot_honour(argv, message, capsys):
    try:
        code = main(argv)
    except SystemExit as exit:  # the parser's own refusal
        code = exit.code
    assert code == 2 and message in capsys.readouterr().err


def test_model_configs_refuse_meaningless_sizes_and_rates():
    for kw, message in (
        ({"num_classes": -1}, "num_classes must be >= 0"),
        ({"in_chans": 0}, "in_chans must be >= 1"),
        ({"drop_path_rate": 2.0}, r"drop_path_rate must be in \[0, 1\)"),
        ({"mlp_ratio": 0.0}, "mlp_ratio must be > 0"),
    ):
        with pytest.raises(ValueError, match=message):
            create_model("swinv2_pico_window7_28", **kw)


def test_plan_fit_gib_says_when_nothing_fits_and_refuses_a_size_beside_it(capsys):
    assert main(["plan", "--model", "swinv2_pico_window7_28", "--fit-gib", "1e-9"]) == 0
    assert "within 1e-09 GiB: none (even 128 px needs more)" in capsys.readouterr().out
    assert main(["plan", "--model", "swinv2_pico_window7_28", "--fit-gib", "1", "--img-size", "64"]) == 2
    assert "give it or --img-size, not both" in capsys.readouterr().err


# ---------------------------------------------------------------------------------- data and recipes
@pytest.mark.parametrize("split", ["train", "val"])
def test_a_split_of_nothing_but_unreadable_files_is_refused_before_a_run_folder_exists(split, tmp_path, capsys):
    data = tmp_path / "data"
    broken_image_folder(data)
    for image in (data / split).rglob("*.png"):
        image.write_text("not an image\n")
    for image in (data / split).rglob("*.jp*g"):
        image.unlink()
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--img-size", "28", "--output", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"of the {split} split of {data} could be read" in err and not out.exists()


def test_a_symbolic_link_loop_in_the_data_is_named_not_walked_forever(tmp_path, capsys):
    from swinv2.data.datasets import refuse_link_loops

    data = tmp_path / "data"
    broken_image_folder(data)
    (data / "val" / "b" / "elsewhere").symlink_to(data / "train" / "a")  # a link across: fine
    refuse_link_loops(data / "val")
    (data / "train" / "a" / "loop").symlink_to("..")
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--output", str(out), "--no-progress"]) == 2
    assert "train/a/loop is a symbolic link back to" in capsys.readouterr().err and not out.exists()


def test_decompression_bombs_are_unreadable_images_not_crashes(tmp_path, monkeypatch, capsys):
    from PIL import Image

    picture = tmp_path / "bomb.png"
    Image.new("L", (64, 64)).save(picture)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL refuses images over twice its limit
    with pytest.raises(UnreadableImage, match="decompression bomb"):
        read_image(picture)
    create_model("swinv2_pico_window7_28").save_pretrained(tmp_path / "model")
    assert main(["predict", str(tmp_path / "model"), str(picture)]) == 2
    assert "bomb.png is not a readable image" in capsys.readouterr().err


def test_running_out_of_memory_is_an_error_naming_the_remedies(tmp_path, capsys):
    """A real allocation failure: 10^8 px images need ~10^16 bytes, past any address space, so the
    allocator refuses at once (no overcommit setting lets it through)."""
    from PIL import Image

    create_model("swinv2_pico_window7_28").save_pretrained(tmp_path / "model")
    Image.new("L", (28, 28)).save(tmp_path / "a.png")
    assert main(["predict", str(tmp_path / "model"), str(tmp_path / "a.png"), "--img-size", "100000000"]) == 2
    err = capsys.readouterr().err
    assert "error: out of memory (" in err and "a smaller --img-size needs less" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"epochs": None}, "epochs is None, expected int"),
        ({"seed": "x"}, "seed is 'x', expected int"),
        ({"model_overrides": []}, "model_overrides is [], expected dict"),
        ({"data": 5}, "data is 5, expected str | None"),
        ({"lr": True}, "lr is True, expected float"),
        ({"pretrained_window_sizes": 7}, "pretrained_window_sizes is 7, expected tuple[int, ...] | None"),
        ({"model_overrides": {"embed_dim": "16"}}, "model config: embed_dim is '16', expected int"),
    ],
)
def test_a_hand_edited_recipe_of_wrong_types_is_refused_by_field(tmp_path, capsys, edit, message):
    out = tmp_path / "run"
    out.mkdir()
    TrainRecipe(output=str(out)).save(out / "config.json")
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, **edit}))
    (out / "checkpoint-0001.pt").write_bytes(b"")  # resume reads the recipe first; a bad one stops there
    assert main(["train", "--resume", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc, where no file can be created")
def test_writing_where_no_file_can_go_is_a_one_line_error_naming_the_path(tmp_path, capsys):
    run = _saved_run(tmp_path)
    target = "/proc/swinv2-cannot-write"
    commands = [
        ["convert", str(run), f"{target}.safetensors"],
        ["export", "--checkpoint", str(run), "--format", "torchscript", "--output", f"{target}.pt"],
    ]
    for command in commands:
        assert main(command) == 2, command
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "error:" in err and target in err, err
