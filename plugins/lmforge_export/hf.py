"""The ``hf`` export stage: an lmforge model + tokenizer → a ``transformers`` model folder.

Model artifacts already hold weights under Hugging Face names (:mod:`lmforge.modelio`), so
exporting is writing ``config.json`` and copying: no module is built. Output folder (artifact
kind ``hf-model``)::

    config.json               architecture.hf_config(vocab) + bos/eos/pad token ids + torch_dtype
    model*.safetensors (+ index)   the artifact's weights: hard-linked or copied for float32,
                              cast for bfloat16/float16 (sharded exactly as the artifact)
    generation_config.json    eos = [<|endoftext|>, <|end|>], pad id, max_new_tokens
    tokenizer.json, tokenizer_config.json, special_tokens_map.json   (from the tokenizer artifact;
                              model_max_length set to the model's max_position_embeddings, and
                              bos_token declared as <|endoftext|> when the tokenizer names none)
    artifact.json             what was exported (lmforge metadata)

The architecture config must implement ``hf_config`` (:class:`lmforge.interfaces.ArchitectureConfig`).

The metadata agrees across files: ``bos_token_id`` in ``config.json`` and
``generation_config.json`` is the tokenizer's BOS — its own ``bos_token`` when its
``tokenizer_config.json`` names one (an imported Llama's ``<s>``), else ``<|endoftext|>``, which
pre-training puts before every document (GPT-2's convention); the exported tokenizer then
declares it as ``bos_token``. Encoding is unchanged either way (``add_bos_token`` stays false).
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
from lmforge.modelio import WEIGHTS_INDEX, read_model_json, weight_files
from lmforge_export.config import HFExportConfig

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


class HFExportStage(Stage):
    config: HFExportConfig

    def check(self) -> None:
        model_dir = self.ctx.input("model").path
        meta = read_model_json(model_dir)
        weight_files(model_dir)  # the weights are there (a clear error if not)
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

        from lmforge.modelio import architecture_config, write_weights

        model_art = self.ctx.input("model")
        arch = architecture_config(model_art.path, self.ctx.plugins)
        vocab = int(read_model_json(model_art.path)["vocab_size"])
        if not callable(getattr(arch, "hf_config", None)):
            raise StageInputError(
                f"stage {self.ctx.stage_id!r}: architecture {arch.type!r} of {model_art.path} "  # type: ignore[attr-defined]
                f"does not support Hugging Face export (its config has no hf_config()); export "
                f"a model built with an architecture that does, such as 'dense'")
        tok = load_tokenizer(self.ctx.input("tokenizer").path)
        end_id = tok.tokenizer.token_to_id(END)
        out = self.ctx.output_dir("hf_model")

        config = dict(arch.hf_config(vocab))
        max_len = int(config.get("max_position_embeddings") or arch.max_seq_len)  # type: ignore[attr-defined]
        tok_config, specials = _tokenizer_metadata(tok.path, max_len)
        bos_id = tok.tokenizer.token_to_id(tok_config["bos_token"])
        config.update(bos_token_id=bos_id, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id,
                      torch_dtype=self.config.dtype)
        files = weight_files(model_art.path)
        if self.config.dtype == "float32":
            for f in files:
                _link_or_copy(f, out / f.name)
            if (model_art.path / WEIGHTS_INDEX).is_file():
                _link_or_copy(model_art.path / WEIGHTS_INDEX, out / WEIGHTS_INDEX)
        else:
            dtype = getattr(torch, self.config.dtype)
            tensors: dict[str, Any] = {}
            for f in files:
                tensors.update(safetensors.torch.load_file(str(f)))
            write_weights(out, tensors, dtype=dtype)
        atomic_write_text(out / "config.json", json.dumps(config, indent=2) + "\n")
        atomic_write_text(out / "generation_config.json", json.dumps({
            "bos_token_id": bos_id,
            "eos_token_id": [tok.eos_id, end_id] if end_id is not None else tok.eos_id,
            "pad_token_id": tok.pad_id,
            "max_new_tokens": self.config.max_new_tokens,
        }, indent=2) + "\n")
        self._copy_tokenizer(tok.path, out)
        atomic_write_text(out / "tokenizer_config.json", json.dumps(tok_config, indent=2) + "\n")
        atomic_write_text(out / "special_tokens_map.json", json.dumps(specials, indent=2) + "\n")
        n_params = arch.num_parameters(vocab)  # type: ignore[attr-defined]
        self.ctx.write_artifact_meta("hf_model", {
            "format": "transformers", "architectures": config.get("architectures"),
            "source_architecture": arch.type, "parameters": n_params,  # type: ignore[attr-defined]
            "dtype": self.config.dtype, "vocab_size": config.get("vocab_size"),
        })
        size = sum(p.stat().st_size for p in out.glob("*.safetensors"))
        return {"parameters": n_params, "size_mb": round(size / 2**20, 2)}

    @staticmethod
    def _copy_tokenizer(src: Path, out: Path) -> None:
        """``tokenizer.json`` as it is (the other two files of TOKENIZER_FILES are written from
        :func:`_tokenizer_metadata`)."""
        tmp = out / ".tokenizer.json.tmp"
        shutil.copyfile(src / "tokenizer.json", tmp)
        tmp.replace(out / "tokenizer.json")


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def _token_name(value: Any) -> str | None:
    """A special token as ``tokenizer_config.json`` writes it: a string or an AddedToken dict."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def _tokenizer_metadata(src: Path, max_len: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The exported ``tokenizer_config.json`` and ``special_tokens_map.json``: the artifact's
    (a minimum when it has none), with ``model_max_length`` the model's context length and a
    ``bos_token`` (the artifact's own, else EOS) that config.json's ``bos_token_id`` names."""
    tok_config = _read_json(src / "tokenizer_config.json") or {
        "tokenizer_class": "PreTrainedTokenizerFast", "eos_token": EOS, "pad_token": PAD,
        "chat_template": jinja_template()}
    specials = _read_json(src / "special_tokens_map.json") or {"eos_token": EOS,
                                                                "pad_token": PAD}
    bos = _token_name(tok_config.get("bos_token")) or _token_name(specials.get("bos_token"))
    tok_config["bos_token"] = specials["bos_token"] = bos or EOS
    tok_config["model_max_length"] = int(max_len)
    return tok_config, specials


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (no copy on the same file system), else copy; atomic."""
    import os

    tmp = dst.with_name(f".{dst.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    tmp.replace(dst)
