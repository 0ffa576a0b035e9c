"""Checkpoints inside an epoch: where a run stands in it, how a resume gets back there, when to save.

An epoch draws its sample order from a generator seeded by (seed, epoch), so a resume re-draws the same
order and drops the batches already trained on (:class:`SkipBatches`) without loading them. What the
batches so far left behind (each rank's loss sum and sample count, its random generators) travels in the
checkpoint as an :class:`EpochPosition`. Loader workers seed each sample from (epoch seed, index)
(:class:`SeededSamples`): a worker's random numbers then do not depend on which batches it loaded before,
so a resumed epoch augments every remaining sample as the uninterrupted one did.
"""

from __future__ import annotations

import itertools
import logging
import random
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from .state import derived_seed, seed_everything, set_rng_state

log = logging.getLogger("swinv2")


@dataclass
class RankProgress:
    """One rank's share of an epoch's running totals, and its generators at the checkpoint."""

    total_loss: float = 0.0
    seen: int = 0
    rng: dict | None = None
    parts: dict[str, float] = field(default_factory=dict)  # sums of the loss's reported parts


@dataclass
class EpochPosition:
    """How far into an epoch a checkpoint was written (nothing of an epoch not yet begun)."""

    batches: int = 0  # batches of the epoch trained on; always ends an optimiser step
    steps: int = 0  # optimiser steps of the epoch taken
    skipped_steps: int = 0  # of them, skipped for a non-finite value (the same on every rank)
    seconds: float = 0.0  # training time of the epoch before the checkpoint
    ranks: list[RankProgress] = field(default_factory=list)

    def to_state(self) -> dict:
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict) -> EpochPosition:
        ranks = [RankProgress(**r) for r in state.get("ranks", [])]
        return cls(**{**state, "ranks": ranks})

    def restore(self, rank: int, world: int, epoch_seed: int) -> RankProgress:
        """This rank's running totals, its generators put back. At another world size the totals go to
        rank 0 and the generators are re-seeded: the run continues at the same sample, but its later
        augmentations and drop-path draws are no longer those of the uninterrupted run."""
        if len(self.ranks) == world:
            mine = self.ranks[rank]
            if mine.rng is not None:
                set_rng_state(mine.rng)
            return mine
        log.warning(
            "this checkpoint was written by %d process(es), the run continues on %d: the same samples follow, "
            "with fresh random streams",
            len(self.ranks),
            world,
        )
        seed_everything(derived_seed(epoch_seed + self.batches, rank))
        if rank:
            return RankProgress()
        parts: dict[str, float] = {}
        for r in self.ranks:
            for name, value in r.parts.items():
                parts[name] = parts.get(name, 0.0) + value
        return RankProgress(sum(r.total_loss for r in self.ranks), sum(r.seen for r in self.ranks), parts=parts)


class SkipBatches(Sampler[list[int]]):
    """The batches of ``batches`` after its first ``start``. The order is drawn in full, as an
    uninterrupted epoch draws it; the consumed part is dropped without loading one sample."""

    def __init__(self, batches: Sampler[list[int]], start: int = 0):
        self.batches, self.start = batches, start

    def __iter__(self) -> Iterator[list[int]]:
        return itertools.islice(iter(self.batches), self.start, None)

    def __len__(self) -> int:
        return max(len(self.batches) - self.start, 0)  # type: ignore[arg-type]


class SeededSamples(Dataset):
    """``dataset`` with every sample's random draws seeded from (``seed``, its index), for loader
    workers: the augmentation of sample ``i`` is then the same whatever the (non-zero) worker count, the
    world size, or the batches a worker loaded before (a resumed epoch). Without workers the samples
    draw from the main process's stream, which the checkpoint holds; so a resume that switches between
    ``--workers 0`` and more continues with other draws."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int):
        seed = derived_seed(self.seed, index)
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        return self.dataset[index]


class CheckpointClock:
    """When to save inside an epoch: every ``every`` optimiser steps of the run, or once ``minutes``
    have passed since the last checkpoint (0 turns either off)."""

    def __init__(self, every: int = 0, minutes: float = 0.0):
        self.every, self.minutes = every, minutes
        self.last = time.monotonic()

    @property
    def enabled(self) -> bool:
        return self.every > 0 or self.minutes > 0

    def due(self, global_step: int) -> bool:
        """Whether optimiser step ``global_step`` (counted over the run, from 1) ends with a checkpoint."""
        by_steps = self.every > 0 and global_step % self.every == 0
        by_time = self.minutes > 0 and time.monotonic() - self.last >= 60 * self.minutes
        return by_steps or by_time

    def reset(self) -> None:
        self.last = time.monotonic()
