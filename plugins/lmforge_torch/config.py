"""Configs of the torch backends ``local``, ``ddp`` and ``fsdp2`` (light: pydantic only)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from lmforge import Config


class _TorchBackendConfig(Config):
    """Settings every torch backend shares."""

    #: Whether the backend spans several processes (a stage using it runs on every rank).
    distributed: ClassVar[bool] = False

    precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto", description="bf16: forward and backward matmuls in bfloat16 (weights, "
        "gradients and optimizer state stay fp32). auto: bf16 on a CUDA GPU that supports it, "
        "or on a CPU with AMX; else fp32.")
    compile: bool = Field(default=False, description="torch.compile the model's forward.")
    activation_checkpointing: bool = Field(
        default=False, description="Recompute each transformer block's activations in the "
        "backward pass instead of storing them (less memory, about one more forward).")
    threads: int | None = Field(default=None, ge=1, description="CPU threads per process for "
                                "torch (torch.set_num_threads). Default: torch's own choice.")
    matmul_precision: Literal["highest", "high", "medium"] = Field(
        default="high", description="torch.set_float32_matmul_precision: 'high' allows TF32 "
        "on GPUs that have it.")


class LocalBackendConfig(_TorchBackendConfig):
    """Train in this process on one device."""

    type: Literal["local"] = Field(default="local", description="Selects this backend.")
    device: Literal["auto", "cpu", "cuda", "mps"] = Field(
        default="auto", description="auto: cuda if available, else mps if available, else cpu.")


class DDPBackendConfig(_TorchBackendConfig):
    """Data parallel over every rank of the launch (torchrun or ``lmforge run --nproc N``):
    a full replica per rank, gradients all-reduced."""

    distributed: ClassVar[bool] = True

    type: Literal["ddp"] = Field(default="ddp", description="Selects this backend.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="auto: the GPU of the local rank (cuda:LOCAL_RANK) when "
        "CUDA is available, else cpu (gloo).")
    bucket_cap_mb: int = Field(default=25, ge=1, description="DDP gradient bucket size (MB).")


class FSDP2BackendConfig(_TorchBackendConfig):
    """Fully sharded data parallel (FSDP2, ``fully_shard``): parameters, gradients and optimizer
    state sharded over every rank of the launch; each block is gathered for its own compute."""

    distributed: ClassVar[bool] = True

    type: Literal["fsdp2"] = Field(default="fsdp2", description="Selects this backend.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="auto: the GPU of the local rank (cuda:LOCAL_RANK) when "
        "CUDA is available, else cpu (gloo).")
    reshard_after_forward: bool = Field(
        default=True, description="Free each block's gathered parameters after its forward "
        "and gather them again for backward (ZeRO-3); false keeps them (ZeRO-2, more memory, "
        "less communication).")
