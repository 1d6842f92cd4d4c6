"""The ``hf`` export stage: an lmforge model + tokenizer → a ``transformers`` model folder.

Output folder (artifact kind ``hf-model``)::

    config.json               model.hf_config() + bos/eos/pad token ids + torch_dtype
    model.safetensors         model.hf_state_dict() (tied output matrix stored once)
    generation_config.json    eos = [<|endoftext|>, <|end|>], pad id, max_new_tokens
    tokenizer.json, tokenizer_config.json, special_tokens_map.json   (from the tokenizer artifact)
    artifact.json             what was exported (lmforge metadata)

The architecture must implement :class:`lmforge.interfaces.HFExportable`.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lmforge import Stage, StageInputError
from lmforge.chat import END, EOS, PAD, jinja_template, load_tokenizer
from lmforge.fsutil import atomic_write_text
from lmforge.modelio import WEIGHTS, read_model_json
from lmforge_export.config import HFExportConfig

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


class HFExportStage(Stage):
    config: HFExportConfig

    def check(self) -> None:
        model_dir = self.ctx.input("model").path
        meta = read_model_json(model_dir)
        if not (Path(model_dir) / WEIGHTS).is_file():
            raise StageInputError(f"stage {self.ctx.stage_id!r}: {Path(model_dir) / WEIGHTS} is "
                                  f"missing; re-run the stage that produced the model")
        tok = load_tokenizer(self.ctx.input("tokenizer").path)
        n_tok = tok.tokenizer.get_vocab_size()
        if n_tok > int(meta["vocab_size"]):
            raise StageInputError(
                f"stage {self.ctx.stage_id!r}: tokenizer {tok.path} has {n_tok} tokens but the "
                f"model in {model_dir} has vocab_size {meta['vocab_size']}; wire the tokenizer "
                f"the model was trained with")

    def run(self) -> Mapping[str, Any]:
        import safetensors.torch
        import torch

        model_art = self.ctx.input("model")
        model = self.ctx.load_model(model_art)
        arch = read_model_json(model_art.path)["architecture"].get("type", "?")
        if not (callable(getattr(model, "hf_config", None))
                and callable(getattr(model, "hf_state_dict", None))):
            raise StageInputError(
                f"stage {self.ctx.stage_id!r}: architecture {arch!r} of {model_art.path} does not "
                f"support Hugging Face export (it has no hf_config()/hf_state_dict()); export a "
                f"model built with an architecture that does, such as 'dense'")
        tok = load_tokenizer(self.ctx.input("tokenizer").path)
        end_id = tok.tokenizer.token_to_id(END)
        out = self.ctx.output_dir("hf_model")

        config = dict(model.hf_config())
        config.update(bos_token_id=tok.eos_id, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id,
                      torch_dtype=self.config.dtype)
        dtype = getattr(torch, self.config.dtype)
        state = {}
        for name, tensor in model.hf_state_dict().items():
            if config.get("tie_word_embeddings") and name == "lm_head.weight":
                continue  # tied: transformers rebuilds lm_head from the embedding
            # clone: tensors may share storage (views), which safetensors refuses
            state[name] = tensor.detach().to("cpu", dtype).contiguous().clone()
        tmp = out / f".{WEIGHTS}.tmp"
        safetensors.torch.save_file(state, str(tmp), metadata={"format": "pt"})
        tmp.replace(out / WEIGHTS)
        atomic_write_text(out / "config.json", json.dumps(config, indent=2) + "\n")
        atomic_write_text(out / "generation_config.json", json.dumps({
            "bos_token_id": tok.eos_id,
            "eos_token_id": [tok.eos_id, end_id] if end_id is not None else tok.eos_id,
            "pad_token_id": tok.pad_id,
            "max_new_tokens": self.config.max_new_tokens,
        }, indent=2) + "\n")
        self._copy_tokenizer(tok.path, out)
        n_params = sum(t.numel() for t in state.values())
        self.ctx.write_artifact_meta("hf_model", {
            "format": "transformers", "architectures": config.get("architectures"),
            "source_architecture": arch, "parameters": n_params, "dtype": self.config.dtype,
            "vocab_size": config.get("vocab_size"),
        })
        return {"parameters": n_params,
                "size_mb": round((out / WEIGHTS).stat().st_size / 2**20, 2)}

    @staticmethod
    def _copy_tokenizer(src: Path, out: Path) -> None:
        for name in TOKENIZER_FILES:
            if (src / name).is_file():
                tmp = out / f".{name}.tmp"
                shutil.copyfile(src / name, tmp)
                tmp.replace(out / name)
        if not (src / "tokenizer_config.json").is_file():
            # A tokenizer artifact without it still loads in transformers with this minimum.
            atomic_write_text(out / "tokenizer_config.json", json.dumps({
                "tokenizer_class": "PreTrainedTokenizerFast", "eos_token": EOS,
                "pad_token": PAD, "chat_template": jinja_template(),
                "model_max_length": 1_000_000_000,
            }, indent=2) + "\n")
