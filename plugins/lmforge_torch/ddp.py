"""The ``ddp`` backend: a full replica per rank, gradients all-reduced by torch DDP.

Every rank builds the same model (seeded init or the same artifact; DDP also broadcasts rank
0's parameters when it wraps). Micro-batches other than a step's last run under ``no_sync``, so
gradients are all-reduced once per optimizer step. Checkpoints are single files written by the
main rank (replicas are identical); per-rank RNG states are saved by the trainer.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from lmforge_torch.base import TorchBackend
from lmforge_torch.config import DDPBackendConfig


class DDPBackend(TorchBackend):
    name = "ddp"

    def __init__(self, config: DDPBackendConfig) -> None:
        super().__init__(config)

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        if self.world_size == 1:
            return model  # one rank: nothing to synchronise
        # Buffers (rotary tables) are equal on every rank: no per-forward broadcast.
        return DistributedDataParallel(
            model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
            bucket_cap_mb=self.config.bucket_cap_mb, forward_sync_buffers=False,
            gradient_as_bucket_view=True)

    def no_sync(self, module: torch.nn.Module) -> AbstractContextManager[Any]:
        if isinstance(module, DistributedDataParallel):
            return module.no_sync()
        return super().no_sync(module)
