"""Registration of the ``lmforge_export`` plugin (Hugging Face export and import). Light:
imports no torch."""

from __future__ import annotations

from collections.abc import Sequence

from lmforge import Component, InputSlot, hookimpl, stage
from lmforge_export.config import HFExportConfig, HFImportConfig


@hookimpl
def lmforge_components() -> Sequence[Component]:
    return [
        stage(
            "export", "hf", config=HFExportConfig,
            factory="lmforge_export.hf:HFExportStage",
            description="Hugging Face transformers folder (config.json, model.safetensors, "
                        "tokenizer with chat template) from a model and its tokenizer.",
            inputs={
                "model": InputSlot(accepts=("model",),
                                   help="the model artifact to export (its architecture must "
                                        "support Hugging Face export)"),
                "tokenizer": InputSlot(accepts=("tokenizer",),
                                       help="the tokenizer the model was trained with"),
            },
            outputs={"hf_model": "hf-model"},
        ),
        stage(
            "import", "hf", config=HFImportConfig,
            factory="lmforge_export.hf_import:HFImportStage",
            description="A local Hugging Face model folder (Llama / Mixtral family: config.json, "
                        "safetensors, tokenizer.json) as a model and a tokenizer artifact.",
            outputs={"model": "model", "tokenizer": "tokenizer"},
        ),
    ]
