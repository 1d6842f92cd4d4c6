"""Config of the ``hf`` export stage (light: pydantic only)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lmforge import Config


class HFExportConfig(Config):
    """Write a folder that ``transformers.AutoModelForCausalLM.from_pretrained`` loads."""

    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        default="float32", description="dtype of the exported weights (config.json torch_dtype).")
    max_new_tokens: int = Field(default=256, ge=1,
                                description="Default generation length in generation_config.json.")


class HFImportConfig(Config):
    """Bring an existing Hugging Face model (local folder) into the pipeline as a ``model`` and a
    ``tokenizer`` artifact, e.g. as the ``init`` of ``sft`` or ``dpo``."""

    path: str = Field(description="Local folder of a transformers causal LM: config.json, "
                      "model.safetensors (or shards + model.safetensors.index.json) and "
                      "tokenizer.json. Relative paths resolve against the spec's folder.")
    architecture: str | None = Field(
        default=None, description="lmforge architecture to import into (e.g. dense, moe). "
        "Default: the installed architecture whose hf_model_types lists config.json's "
        "model_type.")
    max_seq_len: int | None = Field(
        default=None, ge=8, le=1_048_576, description="Override max_position_embeddings (the "
        "rotary table size); e.g. a shorter context than the model's to save memory.")
