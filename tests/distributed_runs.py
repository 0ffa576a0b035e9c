"""Worker of tests/test_distributed.py, started by torchrun: several short ``fit`` calls in one launch.

``python -m torch.distributed.run --nproc_per_node 2 tests/distributed_runs.py PLAN.json``; the plan is a
list of ``{"kind": "fit" | "resume" | "pretrain" | "video" | "dense" | "dense_resume", "recipe": {...},
"stop_after": n}``,
``{"kind": "cli", "args": [...]}`` (``swinv2 ...`` through :func:`swinv2.cli.main`) or
``{"kind": "branch", "source": ..., "checkpoint": ..., "target": ...}`` (a copy of a run cut at one of
its checkpoints, see ``helpers.branch_run``). One process group serves
every run (``fit`` uses a group it finds), so torch is imported once per rank, not once per run.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from swinv2.train import TrainRecipe, fit
from swinv2.train.pretrain import PretrainRecipe, pretrain


def run(step: dict) -> None:
    kind, recipe = step["kind"], step.get("recipe", {})
    if kind == "cli":
        from swinv2.cli import main

        if main(step["args"]) != 0:
            raise RuntimeError(f"swinv2 {step['args']} failed")
    elif kind == "branch":
        if dist.get_rank() == 0:
            from helpers import branch_run

            branch_run(Path(step["source"]), step["checkpoint"], Path(step["target"]))
        dist.barrier()
    elif kind == "resume":
        saved = TrainRecipe.load(Path(recipe["output"]) / "config.json")
        fit(dataclasses.replace(saved, **recipe), resume=True, progress=False)
    elif kind == "pretrain":
        pretrain(PretrainRecipe(**recipe), stop_after=step.get("stop_after"), progress=False)
    elif kind in ("dense", "dense_resume"):
        from swinv2.dense.engine import fit_dense
        from swinv2.dense.recipe import DenseRecipe

        if kind == "dense_resume":
            saved = DenseRecipe.load(Path(recipe["output"]) / "config.json")
            fit_dense(dataclasses.replace(saved, **recipe), resume=True, progress=False)
        else:
            fit_dense(DenseRecipe(**recipe), stop_after=step.get("stop_after"), progress=False)
    elif kind == "video":
        from swinv2.video.train import VideoRecipe, VideoTrainer

        fit(VideoRecipe(**recipe), progress=False, trainer_class=VideoTrainer)
    else:
        fit(TrainRecipe(**recipe), stop_after=step.get("stop_after"), progress=False)


def main(plan_path: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    try:
        for step in json.loads(Path(plan_path).read_text()):
            run(step)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
