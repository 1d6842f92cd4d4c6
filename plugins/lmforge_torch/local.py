"""The ``local`` backend: one process, one device (implements :class:`lmforge.interfaces.Backend`)."""

from __future__ import annotations

from lmforge import LmforgeError
from lmforge_torch.base import TorchBackend, cpu_has_amx, resolve_device, resolve_precision
from lmforge_torch.config import LocalBackendConfig

__all__ = ["LocalBackend", "cpu_has_amx", "resolve_device", "resolve_precision"]


class LocalBackend(TorchBackend):
    """Training in this process on one device; rank 0 of a world of 1.

    Under a multi-process launch a stage with this backend runs on the main rank only (the
    runner sees ``distributed = False`` on its config); it refuses to run on another rank.
    """

    name = "local"

    def __init__(self, config: LocalBackendConfig) -> None:
        super().__init__(config)
        if self.rank != 0:
            raise LmforgeError("backend 'local' trains in one process, but this is rank "
                               f"{self.rank} of {self.world_size}; use backend ddp or fsdp2 to "
                               "train on every rank")
        self.rank, self.world_size = 0, 1
