"""Config of the ``bpe`` tokenizer stage (light: pydantic and lmforge only)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from lmforge import Config
from lmforge.chat import SPECIAL_TOKENS

#: A byte-level BPE starts from one token per byte value.
BYTE_ALPHABET = 256


class BPEConfig(Config):
    """Byte-level BPE training settings.

    ``special_tokens`` always starts with lmforge's chat tokens (:data:`lmforge.chat.SPECIAL_TOKENS`,
    ids ``0 .. 5``); tokens listed here are appended after them.
    """

    vocab_size: int = Field(default=8192, le=2**22, description="Target vocabulary size "
                            "including the 256 byte tokens and the special tokens (at most 2**22, "
                            "16x the largest in use). Read by training stages' plans.")
    min_frequency: int = Field(default=2, ge=1, description="A pair must occur at least this "
                               "often in the sample to be merged.")
    special_tokens: list[str] = Field(default_factory=lambda: list(SPECIAL_TOKENS),
                                      description="Special tokens (each encoded as one token). "
                                      "lmforge's chat tokens are always included, first.")
    split: str = Field(default="train", description="Dataset split to train on.")
    heldout_split: str = Field(default="heldout", description="Split used to measure compression "
                               "(chars/bytes per token) if the dataset has it.")
    max_documents: int | None = Field(default=None, ge=1, description="Train on at most this many "
                                      "documents (the first ones of the split); null: all.")
    max_chars: int | None = Field(default=None, ge=1, description="Stop reading the split once "
                                  "this many characters were sampled; null: no limit.")
    model_max_length: int = Field(default=2048, ge=1, description="model_max_length written to "
                                  "tokenizer_config.json (for transformers).")
    batch_size: int = Field(default=1000, ge=1, description="Documents per batch streamed to the "
                            "trainer.")
    compression_documents: int = Field(default=2000, ge=1, description="Documents encoded to "
                                       "measure compression.")

    @field_validator("special_tokens")
    @classmethod
    def _include_chat_tokens(cls, value: list[str]) -> list[str]:
        out = list(SPECIAL_TOKENS)
        for tok in value:
            if not isinstance(tok, str) or not tok:
                raise ValueError("special tokens must be non-empty strings")
            if tok not in out:
                out.append(tok)
        return out

    @model_validator(mode="after")
    def _vocab_fits_bytes(self) -> BPEConfig:
        need = BYTE_ALPHABET + len(self.special_tokens)
        if self.vocab_size < need:
            raise ValueError(
                f"vocab_size {self.vocab_size} is too small: a byte-level BPE needs at least "
                f"256 byte tokens + {len(self.special_tokens)} special tokens = {need}; "
                f"set vocab_size >= {need}")
        return self

    def estimate(self, upstream: dict[str, Any]) -> dict[str, Any]:
        """Shown by ``lmforge plan``."""
        return {"vocab_size": self.vocab_size, "special_tokens": len(self.special_tokens)}
