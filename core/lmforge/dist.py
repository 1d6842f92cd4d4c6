"""Ranks and collectives for the runner, the stages and the backends (``lmforge.dist``).

``lmforge run`` works unchanged under ``torchrun`` (or any launcher that sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``): rank and world size come
from the environment, and :func:`init` joins the process group once per process.

Two process groups are used:

* the default group (NCCL on CUDA, else gloo): training collectives, with torch's default
  timeout, so a hung collective surfaces in minutes;
* a gloo *coordination* group with a long timeout (``LMFORGE_DIST_TIMEOUT`` seconds, default
  24 h): the runner's decisions and the wait of idle ranks while the main rank runs a
  main-only stage (data curation may take hours).

Inside :func:`solo` — where the runner runs a main-only stage on rank 0 while the other ranks
wait — this process is a world of one: ``rank()`` is 0, ``world_size()`` 1 and every collective
a no-op, so a stage's code never waits for ranks that are not running it.

Everything here is a no-op in a single process, and nothing imports torch until a collective is
actually needed: importing this module is cheap.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any, TypeVar

T = TypeVar("T")

_COORD: Any = None  # the coordination group, once initialised
_SOLO = False  # inside solo(): a world of one


def rank() -> int:
    """This process's global rank (0 without a launcher, and inside :func:`solo`)."""
    return 0 if _SOLO else int(os.environ.get("RANK", "0"))


def world_size() -> int:
    """Number of processes in the run (1 without a launcher, and inside :func:`solo`)."""
    return 1 if _SOLO else int(os.environ.get("WORLD_SIZE", "1"))


@contextlib.contextmanager
def solo() -> Iterator[None]:
    """Within the block this process acts as a world of one (see the module docstring)."""
    global _SOLO
    previous, _SOLO = _SOLO, True
    try:
        yield
    finally:
        _SOLO = previous


def local_rank() -> int:
    """Rank on this node (selects the GPU)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """Whether this process is rank 0: the one that writes manifests, logs and reports."""
    return rank() == 0


def is_distributed() -> bool:
    return world_size() > 1


def coordination_timeout() -> timedelta:
    return timedelta(seconds=float(os.environ.get("LMFORGE_DIST_TIMEOUT", 24 * 3600)))


def init() -> None:
    """Join the default process group (and create the coordination group) if the run is
    distributed and this process has not joined yet. Idempotent."""
    global _COORD
    if not is_distributed():
        return
    import torch
    import torch.distributed as torch_dist

    if not torch_dist.is_initialized():
        backend = "gloo"
        if torch.cuda.is_available() and os.environ.get("LMFORGE_DIST_BACKEND") != "gloo":
            torch.cuda.set_device(local_rank())
            backend = "cuda:nccl,cpu:gloo"
        torch_dist.init_process_group(backend=backend)
    if _COORD is None:
        _COORD = torch_dist.new_group(backend="gloo", timeout=coordination_timeout())


def _group() -> Any:
    init()
    return _COORD


def barrier() -> None:
    """Wait for every rank (coordination group: long timeout)."""
    if is_distributed():
        import torch.distributed as torch_dist

        torch_dist.barrier(group=_group())


def broadcast(obj: T, src: int = 0) -> T:
    """``obj`` of rank ``src`` on every rank (picklable objects; sent between our own ranks
    only, never read from disk)."""
    if not is_distributed():
        return obj
    import torch.distributed as torch_dist

    box = [obj if rank() == src else None]
    torch_dist.broadcast_object_list(box, src=src, group=_group())
    return box[0]  # type: ignore[return-value]


def all_gather(obj: T) -> list[T]:
    """Every rank's ``obj``, in rank order."""
    if not is_distributed():
        return [obj]
    import torch.distributed as torch_dist

    out: list[Any] = [None] * world_size()
    torch_dist.all_gather_object(out, obj, group=_group())
    return out


def main_decides(decide: Callable[[], T]) -> T:
    """Run ``decide()`` on the main rank only and hand its result to every rank."""
    return broadcast(decide() if is_main() else None)


def destroy() -> None:
    """Leave the process group (end of a run)."""
    global _COORD
    if not is_distributed():
        return
    import torch.distributed as torch_dist

    if torch_dist.is_initialized():
        torch_dist.destroy_process_group()
    _COORD = None
