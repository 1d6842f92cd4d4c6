"""Configs of the ``generator`` components (light: pydantic only)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lmforge import Config

Dtype = Literal["float32", "bfloat16", "float16"]


class BuiltinGeneratorConfig(Config):
    """lmforge's own generation service: batched, left-padded, KV cache (see
    docs/plugins/generation.md)."""

    device: str = Field(default="auto", description="auto (CUDA when available, else CPU), "
                        "cpu, cuda or cuda:N.")
    dtype: Dtype = Field(default="float32", description="Parameter dtype the model is loaded "
                         "in (bfloat16 halves memory on GPUs).")
    batch_size: int = Field(default=16, ge=1, le=4096,
                            description="Rows (prompt x sample) per forward pass.")


class VLLMGeneratorConfig(Config):
    """vLLM (``pip install vllm``, CUDA): the model artifact is served through a Hugging Face
    view of it (config.json + the artifact's safetensors + the tokenizer files)."""

    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="vLLM's dtype (auto: the checkpoint's).")
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1,
                                          description="Fraction of GPU memory vLLM may take.")
    tensor_parallel_size: int = Field(default=1, ge=1, description="GPUs to shard the model "
                                      "over.")
    max_model_len: int | None = Field(default=None, ge=8, description="Context length "
                                      "(default: the model's max_position_embeddings).")
    enforce_eager: bool = Field(default=False, description="Skip CUDA graph capture (starts "
                                "faster, decodes slower).")
    seed: int = Field(default=0, description="vLLM's engine seed.")
