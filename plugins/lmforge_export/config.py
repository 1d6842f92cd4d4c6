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
