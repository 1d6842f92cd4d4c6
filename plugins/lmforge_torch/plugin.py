"""Registration of the ``lmforge_torch`` plugin. Light: imports no torch."""

from __future__ import annotations

from collections.abc import Sequence

from lmforge import Component, hookimpl
from lmforge_torch.config import DDPBackendConfig, FSDP2BackendConfig, LocalBackendConfig


@hookimpl
def lmforge_components() -> Sequence[Component]:
    return [
        Component(
            kind="backend", name="local", config=LocalBackendConfig,
            factory="lmforge_torch.local:LocalBackend",
            description="One process on one device (CPU, CUDA GPU or MPS), optional bf16, "
                        "torch.compile and activation checkpointing.",
        ),
        Component(
            kind="backend", name="ddp", config=DDPBackendConfig,
            factory="lmforge_torch.ddp:DDPBackend",
            description="torch DistributedDataParallel over every rank of the launch (torchrun "
                        "or lmforge run --nproc N); NCCL on GPUs, gloo on CPU.",
        ),
        Component(
            kind="backend", name="fsdp2", config=FSDP2BackendConfig,
            factory="lmforge_torch.fsdp2:FSDP2Backend",
            description="FSDP2 (fully_shard): parameters, gradients and optimizer state sharded "
                        "per block over every rank; meta-device init, bf16 mixed precision, "
                        "torch.distributed.checkpoint.",
        ),
    ]
