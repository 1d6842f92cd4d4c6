"""The ``fsdp2`` backend: FSDP2 (``fully_shard``) over every rank of the launch.

Building: the model is constructed on the **meta device** (no memory), each transformer block and
then the root are sharded with ``fully_shard`` (with a bf16 ``MixedPrecisionPolicy`` when
``precision: bf16``: parameters gathered in bf16, gradients reduced in fp32), the shards are
materialised on the rank's device and rotary buffers recomputed. The weights are then loaded
from one full state dict built on the main rank only — the seeded fresh init, or the ``init``
artifact — and broadcast shard by shard (``set_model_state_dict(..., broadcast_from_rank0)``),
so every backend starts from the same weights and no other rank ever holds the whole model.

Stepping: ``set_requires_gradient_sync(False)`` for micro-batches before a step's last, clipping
on DTensor gradients (the norm is over all shards).

Checkpoints: ``torch.distributed.checkpoint`` (sharded; each rank writes its own shards) of the
model and optimizer state dicts; the final artifact is gathered with
``get_model_state_dict(full_state_dict=True, cpu_offload=True)`` onto the main rank.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import torch

from lmforge import LmforgeError
from lmforge_torch.base import TorchBackend, checkpoint_blocks
from lmforge_torch.config import FSDP2BackendConfig

DCP_DIR = "dcp"


class FSDP2Backend(TorchBackend):
    name = "fsdp2"

    def __init__(self, config: FSDP2BackendConfig) -> None:
        super().__init__(config)
        from torch.distributed.device_mesh import init_device_mesh

        if not torch.distributed.is_initialized():
            # One process without a launcher: FSDP2 still needs a (one-rank) process group.
            torch.distributed.init_process_group(
                "nccl" if self.device.type == "cuda" else "gloo",
                store=torch.distributed.HashStore(), rank=0, world_size=1)
        self.mesh = init_device_mesh(self.device.type, (self.world_size,))

    def build_model(self, recipe: Any) -> torch.nn.Module:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
        )
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        with torch.device("meta"):
            model = recipe.construct()
        blocks = getattr(model, "blocks", None)
        if not isinstance(blocks, torch.nn.ModuleList):
            raise LmforgeError(f"backend 'fsdp2' shards per transformer block and needs them as "
                               f"a ModuleList named 'blocks'; {type(model).__name__} has none")
        if self.config.activation_checkpointing:
            checkpoint_blocks(model)
        mp = None
        if self.precision == "bf16":
            mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        kw: dict[str, Any] = {"mesh": self.mesh}
        if mp is not None:
            kw["mp_policy"] = mp
        for block in blocks:
            fully_shard(block, reshard_after_forward=self.config.reshard_after_forward, **kw)
        fully_shard(model, **kw)
        model.to_empty(device=self.device)
        init_buffers = getattr(model, "init_buffers", None)
        if callable(init_buffers):
            init_buffers()
        full = recipe.build_full().state_dict() if self.is_main else {}
        set_model_state_dict(model, full, options=StateDictOptions(
            full_state_dict=True, broadcast_from_rank0=True))
        del full
        if self.config.compile:
            model.compile()
        return model

    @contextlib.contextmanager
    def _no_sync(self, module: torch.nn.Module) -> Iterator[None]:
        module.set_requires_gradient_sync(False)  # type: ignore[operator]
        try:
            yield
        finally:
            module.set_requires_gradient_sync(True)  # type: ignore[operator]

    def no_sync(self, module: torch.nn.Module) -> AbstractContextManager[Any]:
        return self._no_sync(module)

    def autocast(self) -> AbstractContextManager[Any]:
        return contextlib.nullcontext()  # the mixed-precision policy casts parameters

    # -- checkpoints ---------------------------------------------------------------------------
    def save_checkpoint(self, path: Path, module: torch.nn.Module,
                        optimizer: torch.optim.Optimizer | None) -> None:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict

        model_sd, optim_sd = get_state_dict(module, optimizer if optimizer is not None else [])
        state = {"model": model_sd}
        if optimizer is not None:
            state["optimizer"] = optim_sd
        dcp.save(state, checkpoint_id=str(Path(path) / DCP_DIR))

    def load_checkpoint(self, path: Path, module: torch.nn.Module,
                        optimizer: torch.optim.Optimizer | None) -> None:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        model_sd, optim_sd = get_state_dict(module, optimizer if optimizer is not None else [])
        state = {"model": model_sd}
        if optimizer is not None:
            state["optimizer"] = optim_sd
        dcp.load(state, checkpoint_id=str(Path(path) / DCP_DIR))
        set_state_dict(module, optimizer if optimizer is not None else [],
                       model_state_dict=state["model"],
                       optim_state_dict=state.get("optimizer", {}))

    def full_state_dict(self, module: torch.nn.Module) -> dict[str, torch.Tensor] | None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = get_model_state_dict(module, options=StateDictOptions(
            full_state_dict=True, cpu_offload=True))
        if not self.is_main:
            return None
        return {k: v.detach().to(torch.float32) for k, v in full.items()}

    def describe(self) -> str:
        return super().describe() + (", reshard after forward" if
                                     self.config.reshard_after_forward else "")
