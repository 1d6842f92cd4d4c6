"""Registration of the ``lmforge_models`` plugin. Light: imports no torch."""

from __future__ import annotations

from collections.abc import Sequence

from lmforge import Component, hookimpl
from lmforge_models.config import DenseConfig


@hookimpl
def lmforge_components() -> Sequence[Component]:
    return [
        Component(
            kind="architecture", name="dense", config=DenseConfig,
            factory="lmforge_models.dense:build",
            description="Llama-family decoder: RMSNorm, rotary positions, SwiGLU, grouped-query "
                        "attention; exports to transformers LlamaForCausalLM.",
        ),
    ]
