"""Test-only: run Megatron-Core 0.16 on CPU with gloo, for the ``megatron`` backend's tests.

Loaded as an unpackaged plugin (``lmforge -p megatron_cpu``, so the workers of ``--nproc``
load it too) or imported by a test. Importing it:

* sets ``LMFORGE_MEGATRON_CPU=1``, which lets the backend start without CUDA;
* replaces, inside Megatron-Core's own modules only, the name ``torch`` by a proxy whose
  tensor constructors turn ``device="cuda"`` into CPU and whose ``torch.cuda`` has CPU
  stand-ins (``current_device() -> "cpu"``, no-op ``synchronize``, streams and events, the CPU
  generator for the model-parallel RNG tracker); torch itself is untouched;
* fixes two CPU-only gaps found in 0.16.1 (see ../shared/notes/megatron-cpu.md):
  ``moe_utils.te_general_gemm`` is undefined without Transformer Engine, and
  ``maybe_move_tensor_to_cpu`` hands the alltoall dispatcher torch tensors instead of numpy
  split sizes when the tensors are already on the CPU.

None of this is product code: the backend itself requires CUDA and says so.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.machinery
import os
import sys
import types
import warnings
from typing import Any

import torch

os.environ["LMFORGE_MEGATRON_CPU"] = "1"
warnings.filterwarnings("ignore", message=".*(Transformer Engine|Apex).*")
warnings.filterwarnings("ignore", category=UserWarning, module="megatron.*")

_CONSTRUCTORS = ("tensor", "zeros", "ones", "empty", "full", "arange", "randn", "rand",
                 "randint", "as_tensor", "linspace", "zeros_like", "ones_like", "empty_like",
                 "full_like", "eye", "empty_strided")


def _cpu_device(device: Any) -> Any:
    if isinstance(device, torch.device) and device.type == "cuda":
        return torch.device("cpu")
    if isinstance(device, str) and device.startswith("cuda"):
        return "cpu"
    if isinstance(device, int) and not isinstance(device, bool):
        return "cpu"
    return device


def _on_cpu(fn: Any) -> Any:
    def call(*args: Any, **kwargs: Any) -> Any:
        if "device" in kwargs:
            kwargs["device"] = _cpu_device(kwargs["device"])
        return fn(*args, **kwargs)

    call.__name__ = getattr(fn, "__name__", "call")
    return call


class _Dummy:
    """A CUDA stream or event that does nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        return lambda *a, **k: _Dummy()  # record_event() gives an event to synchronize()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Dummy)

    def __hash__(self) -> int:
        return 0


_STREAM = _Dummy()


class _CudaProxy:
    """``torch.cuda`` as Megatron-Core sees it on CPU."""

    def __getattr__(self, name: str) -> Any:
        return getattr(torch.cuda, name)

    @staticmethod
    def current_device() -> str:
        return "cpu"

    @staticmethod
    def synchronize(*args: Any, **kwargs: Any) -> None:
        return None

    Stream = _Dummy
    Event = _Dummy

    @staticmethod
    def current_stream(*args: Any, **kwargs: Any) -> _Dummy:
        return _STREAM

    @staticmethod
    def stream(*args: Any, **kwargs: Any) -> Any:
        return contextlib.nullcontext()

    @staticmethod
    def get_rng_state(*args: Any, **kwargs: Any) -> torch.Tensor:
        return torch.get_rng_state()

    @staticmethod
    def set_rng_state(state: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        torch.set_rng_state(state)

    @staticmethod
    def manual_seed(seed: int) -> None:
        torch.manual_seed(seed)

    @staticmethod
    def empty_cache() -> None:
        return None

    @staticmethod
    def memory_allocated(*args: Any, **kwargs: Any) -> int:
        return 0

    @staticmethod
    def max_memory_allocated(*args: Any, **kwargs: Any) -> int:
        return 0

    @staticmethod
    def device_count() -> int:
        return 1

    @staticmethod
    def is_available() -> bool:
        return False


class _TorchProxy(types.ModuleType):
    """``torch`` with CPU constructors and :class:`_CudaProxy` as ``torch.cuda``."""

    def __init__(self) -> None:
        super().__init__("torch")
        self.cuda = _CudaProxy()
        for name in _CONSTRUCTORS:
            setattr(self, name, _on_cpu(getattr(torch, name)))

    def __getattr__(self, name: str) -> Any:
        return getattr(torch, name)


_PROXY = _TorchProxy()

#: Modules imported before patching, so that their ``torch`` is swapped (others imported later
#: by Megatron-Core are swapped by :func:`patch` when called again).
_MODULES = (
    "megatron.core.parallel_state",
    "megatron.core.utils",
    "megatron.core.tensor_parallel",
    "megatron.core.tensor_parallel.random",
    "megatron.core.models.gpt.gpt_model",
    "megatron.core.models.gpt.gpt_layer_specs",
    "megatron.core.transformer.transformer_config",
    "megatron.core.transformer.module",
    "megatron.core.transformer.moe.moe_utils",
    "megatron.core.transformer.moe.router",
    "megatron.core.transformer.moe.token_dispatcher",
    "megatron.core.transformer.moe.experts",
    "megatron.core.transformer.moe.moe_layer",
    "megatron.core.pipeline_parallel.schedules",
    "megatron.core.pipeline_parallel.p2p_communication",
    "megatron.core.distributed",
    "megatron.core.distributed.finalize_model_grads",
    "megatron.core.optimizer",
    "megatron.core.dist_checkpointing",
    "megatron.core.dist_checkpointing.serialization",
)


class _SwapTorchOnImport(importlib.abc.MetaPathFinder):
    """Megatron-Core modules imported later (lazily, inside Megatron) get the proxy too."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if not name.startswith("megatron."):
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader = spec.loader
        real_exec = loader.exec_module

        def exec_module(module: types.ModuleType) -> None:
            real_exec(module)
            if getattr(module, "torch", None) is torch:
                module.torch = _PROXY  # type: ignore[attr-defined]

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def _with_cuda_type_names(fn: Any) -> Any:
    """``fn`` run while ``Tensor.type()`` names CPU tensors as CUDA ones."""
    def call(*args: Any, **kwargs: Any) -> Any:
        real = torch.Tensor.type

        def cuda_type(t: torch.Tensor, *a: Any, **k: Any) -> Any:
            name = real(t, *a, **k)
            if a or k or not isinstance(name, str) or name.startswith("torch.cuda."):
                return name
            return name.replace("torch.", "torch.cuda.", 1)

        torch.Tensor.type = cuda_type  # type: ignore[method-assign]
        try:
            return fn(*args, **kwargs)
        finally:
            torch.Tensor.type = real  # type: ignore[method-assign]

    call._lmforge_cpu = True  # type: ignore[attr-defined]
    return call


def patch() -> None:
    """Swap ``torch`` in every loaded Megatron-Core module and apply the fixes (idempotent)."""
    if not any(isinstance(f, _SwapTorchOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _SwapTorchOnImport())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in _MODULES:
            importlib.import_module(name)
    for name, module in list(sys.modules.items()):
        if name.startswith("megatron.") and getattr(module, "torch", None) is torch:
            module.torch = _PROXY
    from megatron.core.tensor_parallel import random as mrandom
    from megatron.core.transformer.moe import moe_utils

    mrandom._get_cuda_rng_state = lambda *a, **k: torch.get_rng_state()
    mrandom._set_cuda_rng_state = lambda state, *a, **k: torch.set_rng_state(state)
    if not hasattr(moe_utils, "te_general_gemm"):
        moe_utils.te_general_gemm = None

    def maybe_move_tensor_to_cpu(tensor: Any, as_numpy: bool = False,
                                 record_stream: bool = False) -> Any:
        if torch.is_tensor(tensor):
            tensor = tensor.cpu()
            if as_numpy:
                tensor = tensor.numpy()
        return tensor

    moe_utils.maybe_move_tensor_to_cpu = maybe_move_tensor_to_cpu
    from megatron.core.transformer.moe import token_dispatcher

    token_dispatcher.maybe_move_tensor_to_cpu = maybe_move_tensor_to_cpu

    # Clipping asserts that gradients are torch.cuda.FloatTensor; the same scaling on CPU.
    import megatron.core.optimizer.clip_grads  # noqa: F401 - loaded, then patched below

    def clip_grad_by_total_norm_fp32(parameters: Any, max_norm: float, total_norm: float,
                                     use_decoupled_grad: bool = False) -> None:
        attr = "decoupled_grad" if use_decoupled_grad else "grad"
        grads = [getattr(p, attr).detach() for p in parameters
                 if getattr(p, attr, None) is not None]
        clip_coeff = max_norm / (total_norm + 1.0e-6)
        if clip_coeff < 1.0:
            for g in grads:
                g.mul_(clip_coeff)

    # Tied embeddings over pipeline stages: the last stage's copy is moved with .cuda().
    from megatron.core.models.common.language_module.language_module import LanguageModule

    setup = LanguageModule.setup_embeddings_and_output_layer
    if not getattr(setup, "_lmforge_cpu", False):
        def setup_on_cpu(self: Any) -> Any:
            real = torch.Tensor.cuda
            torch.Tensor.cuda = lambda t, *a, **k: t  # type: ignore[method-assign]
            try:
                return setup(self)
            finally:
                torch.Tensor.cuda = real  # type: ignore[method-assign]

        setup_on_cpu._lmforge_cpu = True  # type: ignore[attr-defined]
        LanguageModule.setup_embeddings_and_output_layer = setup_on_cpu

    # The mixed-precision and distributed optimizers check param.type() against CUDA names.
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer
    from megatron.core.optimizer.optimizer import Float16OptimizerWithFloat16Params

    for cls in (DistributedOptimizer, Float16OptimizerWithFloat16Params):
        if not getattr(cls.__init__, "_lmforge_cpu", False):
            cls.__init__ = _with_cuda_type_names(cls.__init__)

    for name, module in list(sys.modules.items()):
        if name.startswith("megatron.core.optimizer") and hasattr(
                module, "clip_grad_by_total_norm_fp32"):
            module.clip_grad_by_total_norm_fp32 = clip_grad_by_total_norm_fp32


patch()
