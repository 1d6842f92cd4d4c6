"""Config of the ``local`` backend (light: pydantic only)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lmforge import Config


class LocalBackendConfig(Config):
    """Train in this process on one device."""

    type: Literal["local"] = Field(default="local", description="Selects this backend.")
    device: Literal["auto", "cpu", "cuda", "mps"] = Field(
        default="auto", description="auto: cuda if available, else mps if available, else cpu.")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto", description="bf16 runs forward passes under bf16 autocast (weights and "
        "optimizer stay fp32). auto: bf16 on a CUDA GPU that supports it, or on a CPU with AMX; "
        "else fp32.")
    compile: bool = Field(default=False, description="torch.compile the model (forward and, "
                          "when present, its hidden() half used by the losses).")
    threads: int | None = Field(default=None, ge=1, description="CPU threads for torch "
                                "(torch.set_num_threads). Default: torch's own choice.")
    matmul_precision: Literal["highest", "high", "medium"] = Field(
        default="high", description="torch.set_float32_matmul_precision: 'high' allows TF32 "
        "on GPUs that have it.")
