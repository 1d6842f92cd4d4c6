"""Registration of the ``lmforge_models`` plugin. Light: imports no torch."""

from __future__ import annotations

from collections.abc import Sequence

from lmforge import Component, hookimpl
from lmforge_models.config import DenseConfig, MoEConfig


@hookimpl
def lmforge_components() -> Sequence[Component]:
    return [
        Component(
            kind="architecture", name="dense", config=DenseConfig,
            factory="lmforge_models.dense:build",
            description="Llama-family decoder: RMSNorm, rotary positions, SwiGLU, grouped-query "
                        "attention; exports to transformers LlamaForCausalLM.",
        ),
        Component(
            kind="architecture", name="moe", config=MoEConfig,
            factory="lmforge_models.moe:build",
            description="The dense decoder with sparse Mixtral-style MLPs: a linear router over "
                        "SwiGLU experts, top-k routing, load-balancing aux loss; exports to "
                        "transformers MixtralForCausalLM.",
        ),
    ]
