"""Registration of the ``lmforge_megatron`` plugin. Light: imports neither torch nor megatron."""

from __future__ import annotations

from collections.abc import Sequence

from lmforge import Component, hookimpl
from lmforge_megatron.config import MegatronBackendConfig


@hookimpl
def lmforge_components() -> Sequence[Component]:
    return [
        Component(
            kind="backend", name="megatron", config=MegatronBackendConfig,
            factory="lmforge_megatron.backend:MegatronBackend",
            description="Megatron-Core on NVIDIA GPUs: tensor, pipeline (interleaved), expert "
                        "and context parallelism, sequence parallelism, the distributed "
                        "optimizer, bf16, activation recomputation; GPTModel built from the "
                        "architecture's neutral transformer description; dist_checkpointing. "
                        "Install with pip install 'lmforge[megatron]'.",
        ),
    ]
