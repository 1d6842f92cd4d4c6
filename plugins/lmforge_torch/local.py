"""The ``local`` backend: one process, one device (implements :class:`lmforge.interfaces.Backend`)."""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager
from typing import Any

import torch

from lmforge import LmforgeError
from lmforge_torch.config import LocalBackendConfig


def resolve_device(name: str) -> torch.device:
    """``auto`` → cuda, else mps, else cpu; an explicit device must be available."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise LmforgeError("backend 'local': device 'cuda' was requested but torch sees no CUDA "
                           "GPU (torch.cuda.is_available() is False); use device: auto or cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise LmforgeError("backend 'local': device 'mps' was requested but MPS is not "
                           "available; use device: auto or cpu")
    return torch.device(name)


def cpu_has_amx() -> bool:
    return "AMX" in (torch.backends.cpu.get_cpu_capability() or "").upper()


def resolve_precision(name: str, device: torch.device) -> str:
    """``auto`` → ``bf16`` on a CUDA GPU with bf16 or an AMX CPU, else ``fp32``."""
    if name == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        if device.type == "cpu":
            return "bf16" if cpu_has_amx() else "fp32"
        return "fp32"
    if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise LmforgeError("backend 'local': precision bf16 was requested but this GPU does not "
                           "support bfloat16; use precision: fp32 or auto")
    return name


class LocalBackend:
    """Training in this process on one device; rank 0 of a world of 1."""

    rank = 0
    world_size = 1

    def __init__(self, config: LocalBackendConfig) -> None:
        self.config = config
        if config.threads is not None:
            torch.set_num_threads(config.threads)
        torch.set_float32_matmul_precision(config.matmul_precision)
        self.device = resolve_device(config.device)
        self.precision = resolve_precision(config.precision, self.device)

    @property
    def is_main(self) -> bool:
        return True

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return torch.bfloat16 if self.precision == "bf16" else None

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """Move ``model`` to the device and, if configured, compile it in place.

        Compiling in place (``Module.compile``) keeps parameter names unchanged, so the returned
        module can be saved directly. A ``hidden`` method (the half the losses call) is compiled
        too, since compiling a module covers only its ``forward``.
        """
        model = model.to(self.device)
        if self.config.compile:
            model.compile()
            hidden = getattr(model, "hidden", None)
            if callable(hidden):
                model.hidden = torch.compile(hidden)  # instance attribute shadows the method
        return model

    def autocast(self) -> AbstractContextManager[Any]:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def all_reduce_mean(self, value: float) -> float:
        return float(value)

    def barrier(self) -> None:
        return None

    def close(self) -> None:
        return None

    def describe(self) -> str:
        """One line for logs: device, precision, compile, threads."""
        return (f"local backend on {self.device} ({self.precision}"
                f"{', compiled' if self.config.compile else ''}, "
                f"{torch.get_num_threads()} threads)")
