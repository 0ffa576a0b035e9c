"""Data-parallel training under ``torchrun``: DDP, ZeRO stage 1 and FSDP2, and their checkpoints.

One :class:`Distributed` per run holds the process group and the strategy. The training loop asks it to
build and wrap the model, to build the optimiser, for this rank's share of every batch, to sum metrics
over ranks and to save and load checkpoints; with ``strategy="single"`` every answer is the plain
one-process one, so a single process runs exactly the code (and draws exactly the numbers) it always did.

Design:

* The recipe's ``batch_size`` is the global batch. Every rank draws the same shuffled order and takes a
  contiguous slice of each global batch; its loss is weighted by ``world * slice / batch`` so that the
  gradient average over ranks is the one-process mean gradient, also when the last batch splits unevenly.
  A rank whose slice is empty gets one padding sample (label -1, weight 0), so collectives stay in step.
* Checkpoints (see :mod:`.checkpoints`): single, ddp and zero write ``checkpoint-NNNN.pt`` in the
  one-process format (index-keyed optimiser state, whose groups carry the parameter ``names``); fsdp writes
  ``checkpoint-NNNN.dcp/``, a torch.distributed.checkpoint directory with FQN-keyed shards plus
  ``trainer.pt`` (epoch, schedule, scaler). Either loads into any strategy at any world size: ``.pt``
  into fsdp through the names, ``.dcp`` into the others through a plain AdamW that gives the one-process format back.
* ``--meta-init`` (fsdp): the model is built on the meta device, sharded, allocated with ``to_empty`` and
  initialised shard by shard; weights from ``--pretrained`` are read on rank 0 and broadcast.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
import random
import shutil
import warnings
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.distributed as tdist
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, Sampler, SequentialSampler

from ..data.datasets import ReadableCollate, first_readable
from ..weights.checkpoint import check_compatible
from .checkpoints import (
    CorruptCheckpoint,
    checkpoint_name,
    latest_valid,
    load_state,
    seal_directory,
    write_checkpoint,
)
from .optim import build_optimizer
from .position import SkipBatches
from .recipe import TrainRecipe
from .state import atomic_torch_save, derived_seed

TRAINER_STATE = "trainer.pt"  # epoch, schedule, scaler, RNG and recipe, next to the DCP shards
META_INIT_PARAMS = 500_000_000  # fsdp builds larger models on the meta device unless told otherwise
PAD = -1  # sampler index and label of a padding sample


class Share(NamedTuple):
    """This rank's part of one global batch."""

    labels: torch.Tensor | None  # padding labels replaced by 0 (their loss is weighted by 0); None: a dense batch
    real: int  # samples of the global batch on this rank
    weight: float  # loss factor: world * real / batch
    batch: int  # global batch size


def slice_bounds(size: int, rank: int, world: int) -> tuple[int, int]:
    """Contiguous ``[lo, hi)`` of a global batch of ``size`` for ``rank``; sizes differ by at most one."""
    return rank * size // world, (rank + 1) * size // world


class RankBatches(Sampler[list[int]]):
    """This rank's slice of every batch a single process would draw from ``sampler``, in the same order."""

    def __init__(self, sampler: Sampler[int], batch_size: int, rank: int, world: int, drop_last: bool = False):
        self.batches = BatchSampler(sampler, batch_size, drop_last=drop_last)
        self.rank, self.world = rank, world

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches:
            lo, hi = slice_bounds(len(batch), self.rank, self.world)
            yield batch[lo:hi] if hi > lo else [PAD]

    def __len__(self) -> int:
        return len(self.batches)


class Padded(Dataset):
    """``dataset`` plus a padding sample at index :data:`PAD`: the first image, labelled -1."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        if index == PAD:
            return first_readable(self.dataset)[0], PAD
        return self.dataset[index]


def rank_seed(seed: int, rank: int) -> int:
    """Rank 0 keeps ``seed`` (a one-process run's random numbers); other ranks get unrelated streams."""
    return seed if rank == 0 else derived_seed(seed, rank)


def _seed_worker(worker_id: int, rank: int) -> None:
    """Loader workers of every rank start from the same base seed; decorrelate their augmentations."""
    seed = rank_seed(torch.initial_seed(), rank) % 2**63
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def index_to_fqn(state: dict) -> dict:
    """A one-process ``optimizer.state_dict()`` keyed by parameter names (``get_state_dict``'s layout)."""
    per_name, groups = {}, []
    for group in state["param_groups"]:
        names = group.get("names")
        if names is None or len(names) != len(group["params"]):
            raise ValueError("the checkpoint's optimiser groups carry no parameter names; cannot shard it")
        per_name.update({n: state["state"][i] for i, n in zip(group["params"], names) if i in state["state"]})
        groups.append({**group, "params": list(names)})
    return {"state": per_name, "param_groups": groups}


@torch.no_grad()
def materialize(module: nn.Module, device: torch.device) -> None:
    """Allocate a meta-device (possibly sharded) model on ``device`` and initialise it as its constructor
    would: every module's ``reset_parameters`` (the constructors call the same ones), then
    ``init_weights``. Anything left unset is an error, not silent garbage."""
    buffers = [name for name, _ in module.named_buffers()]
    if buffers:
        raise ValueError(f"meta init cannot recompute buffers {buffers[:3]}; build this model without it")
    module.to_empty(device=device)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="DTensor random operators")  # they work on a CPU mesh
        for p in module.parameters():
            p.fill_(math.nan)
        for m in module.modules():  # torch layers and this project's modules alike
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
        for m in module.modules():
            if hasattr(m, "init_weights"):
                m.init_weights()
    unset = [name for name, p in module.named_parameters() if _local(p).isnan().any()]
    if unset:
        raise ValueError(f"meta init does not know how to initialise {unset[:3]}")


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if hasattr(t, "to_local") else t


def _param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@contextlib.contextmanager
def _meta_device() -> Iterator[None]:
    """Build on the meta device; weights a builder loads there are no-ops (rank 0 brings them later)."""
    with torch.device("meta"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*copying from a non-meta parameter.*")
        yield


class Distributed:
    """The run's strategy, rank and process group; every per-strategy decision of the training loop."""

    def __init__(self, strategy: str, device: torch.device, rank: int = 0, world: int = 1, owns_group: bool = False):
        self.strategy, self.device, self.rank, self.world = strategy, device, rank, world
        self.owns_group = owns_group
        self.module: nn.Module | None = None  # the (sharded) model, once built

    # --------------------------------------------------------------------------------- process group
    @classmethod
    def setup(cls, strategy: str, device: torch.device, timeout_s: float = 900.0) -> Distributed:
        """Read torchrun's environment and start the process group the strategy needs.

        ddp and zero in one process run as single (the same numbers, without a group); fsdp in one process
        uses a one-rank group, so its checkpoint format and meta init work the same at any size.
        """
        world = int(os.environ.get("WORLD_SIZE", "1"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if world > 1 and strategy == "single":
            raise ValueError(f"{world} processes were started but --strategy is single; use ddp, zero or fsdp")
        if world == 1 and strategy in ("ddp", "zero"):
            print(f"--strategy {strategy} in one process: training as single (start several with torchrun)")
            strategy = "single"
        if device.type == "cuda" and "LOCAL_RANK" in os.environ:
            device = torch.device("cuda", local_rank)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        if strategy == "single":
            return cls(strategy, device)
        owns = not tdist.is_initialized()
        if owns:
            backend = "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"
            if "MASTER_ADDR" in os.environ:
                # a collective that waits longer than the timeout (a rank hung or gone) raises instead of hanging
                timeout = datetime.timedelta(seconds=timeout_s)
                tdist.init_process_group(backend, device_id=device if device.type == "cuda" else None, timeout=timeout)
            else:  # fsdp in a plain process: a group of one
                tdist.init_process_group(backend, store=tdist.HashStore(), rank=0, world_size=1)
        return cls(strategy, device, tdist.get_rank(), tdist.get_world_size(), owns)

    def close(self) -> None:
        if self.owns_group and tdist.is_initialized():
            tdist.destroy_process_group()
            self.owns_group = False

    def __enter__(self) -> Distributed:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def grouped(self) -> bool:
        return self.strategy != "single"

    def describe(self) -> str:
        return "" if self.strategy == "single" else f", {self.strategy} x {self.world}"

    def barrier(self) -> None:
        if self.grouped:
            tdist.barrier()

    def all_reduce_sum(self, *values: float) -> tuple[float, ...]:
        """Sums over ranks (float64); one process gets its values back untouched."""
        if self.world == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64)
        tdist.all_reduce(t)
        return tuple(t.tolist())

    def broadcast(self, obj: object) -> object:
        """Rank 0's ``obj`` on every rank."""
        if self.world == 1:
            return obj
        box = [obj]
        tdist.broadcast_object_list(box, src=0, device=torch.device("cpu"))
        return box[0]

    def gather(self, obj: object) -> list:
        """Every rank's ``obj``, in rank order, on every rank."""
        if self.world == 1:
            return [obj]
        out: list = [None] * self.world
        tdist.all_gather_object(out, obj)
        return out

    def rank_seed(self, seed: int) -> int:
        return rank_seed(seed, self.rank)

    # ------------------------------------------------------------------------------- model and optim
    def prepare(self, build: Callable[[], nn.Module], recipe: TrainRecipe) -> nn.Module:
        """The model on this rank's device, sharded under fsdp (built on the meta device when asked or large)."""
        meta = recipe.meta_init
        if meta is False or (meta is None and self.strategy != "fsdp"):
            return self._place(build().to(self.device), recipe)
        with _meta_device():
            module = build()
        if meta is None and _param_count(module) <= META_INIT_PARAMS:
            return self._place(build().to(self.device), recipe)
        self._place(module, recipe)
        materialize(module, self.device)
        if recipe.pretrained:  # rank 0 reads the weights (and SimMIM parts) once and hands out the shards
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

            full = build().state_dict() if self.is_main else {}
            options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
            set_model_state_dict(module, full, options=options)
        return module

    def _place(self, module: nn.Module, recipe: TrainRecipe) -> nn.Module:
        """fsdp: shard each transformer block, then the rest at the root (bf16 compute with ``--amp bf16``)."""
        self.module = module
        if self.strategy != "fsdp":
            return module
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        from ..models.swinv2 import SwinV2Block

        mesh = init_device_mesh(self.device.type, (self.world,))
        policy = MixedPrecisionPolicy()
        if recipe.amp == "bf16":
            policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        for block in [m for m in module.modules() if isinstance(m, SwinV2Block)]:
            fully_shard(block, mesh=mesh, mp_policy=policy)
        fully_shard(module, mesh=mesh, mp_policy=policy)
        return module

    def build_optimizer(self, module: nn.Module, recipe: TrainRecipe) -> torch.optim.Optimizer:
        args = (module, recipe.scaled_lr, recipe.weight_decay, recipe.layer_decay)
        return build_optimizer(*args, shard=self.strategy == "zero")

    def wrap(self, module: nn.Module) -> nn.Module:
        """What the loop calls in training: DDP for ddp and zero (gradient all-reduce), else the module."""
        if self.strategy not in ("ddp", "zero"):
            return module
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(module, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def full_state_dict(self, module: nn.Module) -> dict[str, torch.Tensor]:
        """``module``'s (a submodule's) full tensors; under fsdp every rank calls it and rank 0 gets them."""
        if self.strategy != "fsdp":
            return module.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        full = get_model_state_dict(self.module, options=options)
        prefix = next(name for name, m in self.module.named_modules() if m is module)
        if not prefix:
            return full
        return {k[len(prefix) + 1 :]: v for k, v in full.items() if k.startswith(prefix + ".")}

    # ------------------------------------------------------------------------------------------ data
    def loader(
        self,
        dataset: Dataset,
        batch_size: int,
        shuffle: bool,
        generator: torch.Generator,
        skip: int = 0,
        collate: Callable[[Dataset], Callable] = ReadableCollate,
        drop_last: bool = False,
        **kwargs,
    ) -> DataLoader:
        """Batches of ``batch_size`` (global) in one process; this rank's slices of them in several.

        ``skip`` drops the first batches of the order (a resume inside an epoch) without loading them.
        ``collate(dataset)`` makes the batches; under several processes ``dataset`` answers index
        :data:`PAD` with a padding sample labelled :data:`PAD`, for a rank whose slice is empty."""
        sampler = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
        if self.world == 1:  # the sampler and batches DataLoader(shuffle=...) itself would build
            batches = SkipBatches(BatchSampler(sampler, batch_size, drop_last=drop_last), skip)
            return DataLoader(
                dataset, batch_sampler=batches, generator=generator, collate_fn=collate(dataset), **kwargs
            )
        batches = SkipBatches(RankBatches(sampler, batch_size, self.rank, self.world, drop_last), skip)
        seed_worker = partial(_seed_worker, rank=self.rank)
        dataset = Padded(dataset)
        return DataLoader(
            dataset,
            batch_sampler=batches,
            generator=generator,
            worker_init_fn=seed_worker,
            collate_fn=collate(dataset),
            **kwargs,
        )

    def share(self, step: int, labels: torch.Tensor, total: int, batch_size: int) -> Share:
        """This rank's part of global batch ``step`` of a ``total``-sample epoch, and its loss weight.

        A padding sample (label -1) stands in for a batch of unreadable files: it has weight 0.
        """
        if self.world == 1 and labels.ndim == 1 and len(labels) == 1 and labels[0] == PAD:
            return Share(labels.clamp_min(0), 0, 0.0, 1)
        real = len(labels) if self.world == 1 else int((labels >= 0).sum())
        share = self.share_of(step, real, total, batch_size)
        return share._replace(labels=labels if self.world == 1 else labels.clamp_min(0))

    def share_of(self, step: int, real: int, total: int, batch_size: int) -> Share:
        """The :meth:`share` of a batch with ``real`` samples on this rank (no labels: a dense task's)."""
        if self.world == 1:
            return Share(None, real, 1.0 if real else 0.0, max(real, 1))
        batch = min(batch_size, total - step * batch_size)
        return Share(None, real, self.world * real / batch, batch)

    # ----------------------------------------------------------------------------------- checkpoints
    def save(self, trainer, run_dir: Path) -> None:
        """``checkpoint-<epoch>[-<step>].pt`` (single, ddp, zero; rank 0) or ``.dcp/`` (fsdp; every rank),
        checksummed; the recipe's ``keep_checkpoints`` newest stay."""
        step, keep = trainer.position.steps if trainer.position else 0, trainer.recipe.keep_checkpoints
        if self.strategy == "fsdp":
            self._save_dcp(trainer, run_dir, step, keep)
        else:
            if self.strategy == "zero":
                trainer.optimizer.consolidate_state_dict(to=0)
            if self.is_main:
                write_checkpoint(trainer.state_dict(), run_dir, trainer.epoch, step, keep)
        self.barrier()

    def _save_dcp(self, trainer, run_dir: Path, step: int, keep: int) -> None:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict

        tmp = run_dir / (checkpoint_name(trainer.epoch, "dcp", step) + ".tmp")
        if self.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        self.barrier()
        model, optimizer = get_state_dict(trainer.module, trainer.optimizer)
        dcp.save({"model": model, "optimizer": optimizer}, checkpoint_id=tmp)
        self.barrier()
        if self.is_main:  # the trainer state, then the digests of every shard, then the rename
            atomic_torch_save(trainer.extra_state(), tmp / TRAINER_STATE)
            seal_directory(tmp, run_dir, trainer.epoch, step, keep)

    def choose_checkpoint(self, run_dir: Path) -> Path | None:
        """Rank 0 verifies the run's checkpoints; every rank gets its choice (or its refusal)."""
        choice: object = None
        if self.is_main:
            try:
                choice = latest_valid(run_dir)
            except CorruptCheckpoint as exc:
                choice = exc
        choice = self.broadcast(choice)
        if isinstance(choice, CorruptCheckpoint):
            raise choice
        return choice

    def load(self, trainer, run_dir: Path) -> bool:
        """Resume ``trainer`` from the run's newest intact checkpoint, whichever strategy and world size wrote it."""
        path = self.choose_checkpoint(run_dir)
        if path is None:
            return False
        if path.suffix == ".pt":
            state = load_state(path, self.device)
            if self.strategy == "fsdp":  # (the other strategies check in trainer.load_state_dict)
                check_compatible(trainer.module.state_dict(), state["model"], "the checkpoint's model")
                self._set_full(trainer, state["model"], index_to_fqn(state["optimizer"]))
                trainer.load_extra_state(state)
            else:
                trainer.load_state_dict(state)
            return True
        extra = torch.load(path / TRAINER_STATE, map_location=self.device, weights_only=True)
        if self.strategy == "fsdp":
            self._load_dcp(path, trainer.module, trainer.optimizer)
            trainer.load_extra_state(extra)
        else:  # through a plain AdamW, whose state_dict() is the one-process format any optimiser loads
            plain = build_optimizer(trainer.module, 0.0, 0.0, trainer.recipe.layer_decay)
            self._load_dcp(path, trainer.module, plain)
            trainer.load_state_dict({**extra, "model": trainer.module.state_dict(), "optimizer": plain.state_dict()})
        return True

    def _set_full(self, trainer, model: dict, optimizer: dict) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        options = StateDictOptions(full_state_dict=True)
        module, optim = trainer.module, trainer.optimizer
        set_state_dict(module, optim, model_state_dict=model, optim_state_dict=optimizer, options=options)

    def _load_dcp(self, path: Path, module: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Read a DCP checkpoint into ``module`` and ``optimizer`` (resharded to this world size)."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        model_sd, optim_sd = get_state_dict(module, optimizer)
        state = {"model": model_sd, "optimizer": optim_sd}
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*assuming the intent is to load in a single process")
            dcp.load(state, checkpoint_id=path, no_dist=not tdist.is_initialized())
        set_state_dict(module, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
