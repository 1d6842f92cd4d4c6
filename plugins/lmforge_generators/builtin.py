"""The ``builtin`` generator: :class:`lmforge.generators.BuiltinGenerator` from its config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmforge.generators import BuiltinGenerator
from lmforge_generators.config import BuiltinGeneratorConfig


def build(config: BuiltinGeneratorConfig, model_dir: Path, tokenizer: Any,
          plugins: Any) -> BuiltinGenerator:
    """The ``generator`` factory: load ``model_dir`` on the configured device and dtype."""
    return BuiltinGenerator.from_artifact(model_dir, tokenizer, plugins, device=config.device,
                                          dtype=config.dtype, batch_size=config.batch_size)
