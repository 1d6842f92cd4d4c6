"""What the torch backends share: device and precision resolution, the optimizer, clipping,
autocast, activation checkpointing, single-file checkpoints and scalar collectives.

:class:`TorchBackend` implements :class:`lmforge.interfaces.Backend` for a model that is whole
on every rank (``local``, ``ddp``); ``fsdp2`` overrides what sharding changes.
"""

from __future__ import annotations

import contextlib
import math
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import torch

from lmforge import LmforgeError, dist
from lmforge.checkpoint import read_state, write_state
from lmforge.training.schedule import build_optimizer


def resolve_device(name: str, backend: str = "local") -> torch.device:
    """``auto`` → the local rank's GPU, else mps (local only), else cpu; an explicit device
    must be available."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", dist.local_rank() % torch.cuda.device_count())
        if backend == "local" and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise LmforgeError(f"backend {backend!r}: device 'cuda' was requested but torch sees "
                               f"no CUDA GPU (torch.cuda.is_available() is False); use device: "
                               f"auto or cpu")
        return torch.device("cuda", dist.local_rank() % torch.cuda.device_count())
    if name == "mps" and not torch.backends.mps.is_available():
        raise LmforgeError(f"backend {backend!r}: device 'mps' was requested but MPS is not "
                           f"available; use device: auto or cpu")
    return torch.device(name)


def cpu_has_amx() -> bool:
    return "AMX" in (torch.backends.cpu.get_cpu_capability() or "").upper()


def resolve_precision(name: str, device: torch.device, backend: str = "local") -> str:
    """``auto`` → ``bf16`` on a CUDA GPU with bf16 or an AMX CPU, else ``fp32``."""
    if name == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        if device.type == "cpu":
            return "bf16" if cpu_has_amx() else "fp32"
        return "fp32"
    if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise LmforgeError(f"backend {backend!r}: precision bf16 was requested but this GPU "
                           f"does not support bfloat16; use precision: fp32 or auto")
    return name


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The user's module inside a DDP / compile wrapper."""
    while True:
        inner = getattr(module, "module", None) or getattr(module, "_orig_mod", None)
        if not isinstance(inner, torch.nn.Module):
            return module
        module = inner


def checkpoint_blocks(model: torch.nn.Module) -> None:
    """Activation checkpointing per transformer block (``model.blocks``), in place; parameter
    names do not change (composable API)."""
    from torch.distributed._composable import checkpoint

    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, torch.nn.ModuleList):
        raise LmforgeError(f"activation_checkpointing needs the model's transformer blocks as a "
                           f"ModuleList named 'blocks'; {type(model).__name__} has none")
    for block in blocks:
        checkpoint(block)


def unshared_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``state_dict`` with tensors that share storage (tied weights) cloned, because
    safetensors refuses to store two names for one buffer."""
    seen: set[tuple[int, int]] = set()
    out = {}
    for k, v in module.state_dict().items():
        key = (v.untyped_storage().data_ptr(), v.storage_offset()) if v.numel() else (0, id(v))
        out[k] = v.detach().clone() if key in seen else v.detach()
        seen.add(key)
    return out


class TorchBackend:
    """Base of the torch backends: a whole model on every rank (see the module docstring)."""

    name = "local"

    def __init__(self, config: Any) -> None:
        self.config = config
        if config.threads is not None:
            torch.set_num_threads(config.threads)
        torch.set_float32_matmul_precision(config.matmul_precision)
        dist.init()
        self.rank, self.world_size = dist.rank(), dist.world_size()
        self.device = resolve_device(config.device, self.name)
        self.precision = resolve_precision(config.precision, self.device, self.name)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return torch.bfloat16 if self.precision == "bf16" else None

    # -- building ------------------------------------------------------------------------------
    def build_model(self, recipe: Any) -> torch.nn.Module:
        """The recipe's full model on this rank's device, activation-checkpointed and compiled
        as configured, then :meth:`wrap`-ped."""
        model = recipe.build_full().to(self.device)
        if self.config.activation_checkpointing:
            checkpoint_blocks(model)
        if self.config.compile:
            model.compile()  # in place: parameter names stay unchanged
        return self.wrap(model)

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        return model

    def build_optimizer(self, module: torch.nn.Module, optim: Any) -> torch.optim.Optimizer:
        return build_optimizer(unwrap(module), optim)

    # -- stepping ------------------------------------------------------------------------------
    def no_sync(self, module: torch.nn.Module) -> AbstractContextManager[Any]:
        return contextlib.nullcontext()

    def clip_grad_norm_(self, module: torch.nn.Module, max_norm: float) -> float:
        params = [p for p in unwrap(module).parameters() if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else math.inf)
        return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)

    def autocast(self) -> AbstractContextManager[Any]:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    # -- checkpoints ---------------------------------------------------------------------------
    def save_checkpoint(self, path: Path, module: torch.nn.Module,
                        optimizer: torch.optim.Optimizer | None) -> None:
        """The main rank writes ``train.safetensors`` + ``train.json`` (replicas are equal)."""
        if self.is_main:
            state: dict[str, Any] = {"model": unshared_state_dict(unwrap(module))}
            if optimizer is not None:
                state["optimizer"] = optimizer.state_dict()
            write_state(Path(path), "train", state)

    def load_checkpoint(self, path: Path, module: torch.nn.Module,
                        optimizer: torch.optim.Optimizer | None) -> None:
        state = read_state(Path(path), "train")
        unwrap(module).load_state_dict(state["model"])
        if optimizer is not None:
            opt = state["optimizer"]
            for g in opt["param_groups"]:
                if "betas" in g:
                    g["betas"] = tuple(g["betas"])
            optimizer.load_state_dict(opt)

    def full_state_dict(self, module: torch.nn.Module) -> dict[str, torch.Tensor] | None:
        if not self.is_main:
            return None
        return {k: v.detach().to("cpu", torch.float32)
                for k, v in unwrap(module).state_dict().items()}

    # -- collectives ---------------------------------------------------------------------------
    def all_reduce_mean(self, value: float) -> float:
        if self.world_size == 1:
            return float(value)
        import torch.distributed as torch_dist

        t = torch.tensor([float(value)], dtype=torch.float64, device=self._comm_device())
        torch_dist.all_reduce(t)
        return float(t.item()) / self.world_size

    def _comm_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")

    def barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as torch_dist

            torch_dist.barrier()

    def close(self) -> None:
        return None

    def describe(self) -> str:
        """One line for logs: backend, device, precision, world size, threads."""
        extras = [self.precision]
        if self.config.compile:
            extras.append("compiled")
        if self.config.activation_checkpointing:
            extras.append("activation checkpointing")
        world = f", {self.world_size} ranks" if self.world_size > 1 else ""
        return (f"{self.name} backend on {self.device} ({', '.join(extras)}{world}, "
                f"{torch.get_num_threads()} threads)")
