"""Data-parallel training across processes: who this process is, how a batch is split, the process group.

A retraining job launched by ``torchrun --nproc_per_node=N`` (the runners do that when
``controller.gpus_per_job`` is above 1) finds its rank in torchrun's environment, joins a process group
(NCCL on CUDA, gloo on CPU) and trains one share of every batch; the model is wrapped in
``DistributedDataParallel``, which averages the gradients. A job not launched by torchrun (or launched with
one process) sees :data:`SINGLE_PROCESS` and trains exactly as before.

The split is chosen so that N processes compute the same optimiser steps as one: every process draws the
same shuffled order from the same seed, cuts it into the same global batches of ``batch_size`` rows, and
takes every N-th row of each (:func:`shard_rows`), ``batch_size / N`` rows per process. This is what
``torch.utils.data.DistributedSampler`` does within a batch, without its two departures from a
single-process run: it draws a fresh permutation from ``seed + epoch`` each epoch (a single-process job
draws successive permutations from one generator), and it pads the data to a multiple of N by repeating
rows, so a few rows would be trained twice per epoch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from insightloop.retrain.errors import RetrainPermanentError

log = logging.getLogger(__name__)

_T = TypeVar("_T")

#: The variables torchrun sets for each worker that say who it is.
RANK_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


class DistributedLaunchError(RetrainPermanentError):
    """A job's distributed launch cannot work: torchrun's variables are wrong, or a batch cannot be split."""


@dataclass(frozen=True)
class Ranks:
    """Which of ``world_size`` training processes this is (``local_rank``: which on this node, its GPU)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size or self.local_rank < 0:
            raise DistributedLaunchError(
                f"rank {self.rank} (local {self.local_rank}) of {self.world_size} processes is not a valid place"
            )

    @property
    def distributed(self) -> bool:
        """True when several processes train together."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that evaluates, writes the candidate and the job's result."""
        return self.rank == 0

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> Ranks:
        """The ranks torchrun gave this process; :data:`SINGLE_PROCESS` when it was not launched by torchrun.

        >>> Ranks.from_environment({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"})
        Ranks(rank=1, world_size=2, local_rank=1)
        >>> Ranks.from_environment({"PATH": "/bin"}) == SINGLE_PROCESS
        True
        """
        given = {name: environ[name] for name in RANK_VARIABLES if environ.get(name, "").strip()}
        if not given:
            return SINGLE_PROCESS
        missing = [name for name in RANK_VARIABLES if name not in given]
        if missing:
            raise DistributedLaunchError(
                f"{', '.join(sorted(given))} set but not {', '.join(missing)}: launch a multi-process job with torchrun"
            )
        try:
            values = {name: int(value) for name, value in given.items()}
        except ValueError as exc:
            shown = ", ".join(f"{k}={v!r}" for k, v in given.items())
            raise DistributedLaunchError(f"torchrun's variables must be whole numbers: {shown}") from exc
        return cls(rank=values["RANK"], world_size=values["WORLD_SIZE"], local_rank=values["LOCAL_RANK"])


SINGLE_PROCESS = Ranks()


def per_rank_batch(batch_size: int, world_size: int) -> int:
    """Rows each process trains per step so that the global batch stays ``batch_size``.

    >>> per_rank_batch(16, 2)
    8
    """
    if batch_size % world_size:
        raise DistributedLaunchError(
            f"batch_size {batch_size} cannot be split evenly across {world_size} training processes: the global "
            f"batch stays batch_size, each process trains batch_size / {world_size} rows per step; choose a "
            f"batch_size that is a multiple of {world_size} (controller.batch_size, or gpus_per_job)"
        )
    return batch_size // world_size


def shard_rows(rows: Sequence[int], ranks: Ranks) -> list[int]:
    """This process's share of one global batch: every ``world_size``-th row from its rank on.

    A short final batch can leave a process with no row (fewer rows than processes).

    >>> shard_rows([7, 3, 9, 1, 4], Ranks(rank=1, world_size=2, local_rank=1))
    [3, 1]
    """
    return list(rows[ranks.rank :: ranks.world_size])


def backend_for(device: torch.device) -> str:
    """NCCL between GPUs, gloo between CPU processes."""
    return "nccl" if device.type == "cuda" else "gloo"


def training_device(ranks: Ranks, device: torch.device) -> torch.device:
    """The device this process trains on: on CUDA the GPU of its local rank (made the current one)."""
    if device.type != "cuda" or not ranks.distributed:
        return device
    visible = torch.cuda.device_count()
    if ranks.local_rank >= visible:
        raise DistributedLaunchError(
            f"process {ranks.local_rank} on this node has no GPU of its own: {visible} visible for "
            f"{ranks.world_size} processes (request as many GPUs as torchrun starts processes)"
        )
    torch.cuda.set_device(ranks.local_rank)
    return torch.device("cuda", ranks.local_rank)


@contextmanager
def process_group(ranks: Ranks, device: torch.device) -> Iterator[None]:
    """Join the job's process group for the ``with`` block (nothing for a single process).

    The group comes from torchrun's environment (``MASTER_ADDR``, ``MASTER_PORT``). Leaving the block
    normally waits for every process (a barrier), so none tears the group down while another still
    trains; leaving it with an error does not wait (the others may be gone), and torchrun stops the rest.
    """
    if not ranks.distributed:
        yield
        return
    backend = backend_for(device)
    options: dict[str, Any] = {"device_id": device} if device.type == "cuda" else {}
    try:
        dist.init_process_group(backend=backend, rank=ranks.rank, world_size=ranks.world_size, **options)
    except ValueError as exc:  # e.g. no MASTER_ADDR: not started by torchrun
        raise DistributedLaunchError(f"cannot join the process group ({backend}): {exc}") from exc
    if ranks.is_main:
        log.info("training in %d processes (%s)", ranks.world_size, backend)
    try:
        yield
        dist.barrier()
    finally:
        dist.destroy_process_group()


def broadcast_from_main(value: _T, ranks: Ranks) -> _T:
    """Rank 0's ``value`` on every process (picklable values; returned as is for a single process)."""
    if not ranks.distributed:
        return value
    box: list[Any] = [value if ranks.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]  # type: ignore[no-any-return]


def data_parallel(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` wrapped in ``DistributedDataParallel`` on ``device`` (which averages gradients across ranks)."""
    from torch.nn.parallel import DistributedDataParallel

    if device.type != "cuda":
        return DistributedDataParallel(model)
    return DistributedDataParallel(
        model, device_ids=[device.index if device.index is not None else torch.cuda.current_device()]
    )
