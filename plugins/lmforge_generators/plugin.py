"""Registration of the ``generators`` plugin (light: imports no torch and no vllm)."""

from __future__ import annotations

from collections.abc import Sequence

from lmforge import Component, hookimpl
from lmforge_generators.config import BuiltinGeneratorConfig, VLLMGeneratorConfig


@hookimpl
def lmforge_components() -> Sequence[Component]:
    return [
        Component(kind="generator", name="builtin", config=BuiltinGeneratorConfig,
                  factory="lmforge_generators.builtin:build",
                  description="lmforge's generation service (batched, KV cache) on a model "
                              "artifact"),
        Component(kind="generator", name="vllm", config=VLLMGeneratorConfig,
                  factory="lmforge_generators.vllm:VLLMGenerator",
                  description="vLLM on a model artifact (needs `pip install vllm` and CUDA)"),
    ]
