"""The ``import/hf`` stage: a local Hugging Face model folder → ``model`` + ``tokenizer`` artifacts.

What is read: ``config.json`` (the architecture whose ``hf_model_types`` lists its
``model_type`` converts it with ``from_hf_config``; what it cannot represent is an error naming
the key), the safetensors weights (one file or shards with an index) and ``tokenizer.json``.

lmforge's chat format needs its special tokens (``<|endoftext|>``, ``<|pad|>``, role markers,
``<|end|>``). Those the tokenizer lacks are added; if the vocabulary then outgrows the embedding,
the embedding (and an untied output matrix) gains rows initialised to the mean of the existing
rows, the usual way to add tokens to a trained model. The logits of the original vocabulary are
unchanged: the imported model computes exactly what the Hugging Face model computes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lmforge import Stage, StageInputError
from lmforge.chat import SPECIAL_TOKENS
from lmforge_export.config import HFImportConfig

EMBED, HEAD = "model.embed_tokens.weight", "lm_head.weight"


def _source(config: HFImportConfig, stage_id: str) -> Path:
    path = Path(config.path).expanduser()
    needed = [path / "config.json", path / "tokenizer.json"]
    missing = [str(p) for p in needed if not p.is_file()]
    if not path.is_dir() or missing:
        raise StageInputError(
            f"stage {stage_id!r}: {path} is not a Hugging Face model folder"
            + (f": missing {', '.join(missing)}" if path.is_dir() else ": no such folder")
            + "; point 'path' at a folder saved with save_pretrained()")
    return path


class HFImportStage(Stage):
    """Stage ``import/hf`` (no inputs; outputs ``model`` and ``tokenizer``)."""

    config: HFImportConfig

    def _architecture(self, hf: Mapping[str, Any], where: Path) -> Any:
        """The lmforge architecture config equal to ``hf`` (config.json)."""
        plugins, sid = self.ctx.plugins, self.ctx.stage_id
        model_type = hf.get("model_type")
        candidates = {}
        for c in plugins.components("architecture"):
            for t in getattr(c.config, "hf_model_types", ()):
                candidates[t] = c
        if self.config.architecture is not None:
            component = plugins.get_component("architecture", self.config.architecture)
        elif model_type in candidates:
            component = candidates[model_type]
        else:
            raise StageInputError(
                f"stage {sid!r}: {where} has model_type {model_type!r}, which no installed "
                f"architecture imports (supported: {sorted(candidates) or 'none'}); install a "
                f"plugin for it or set 'architecture'")
        try:
            arch = component.config.from_hf_config(hf)
        except AttributeError:
            raise StageInputError(f"stage {sid!r}: architecture {component.name!r} cannot "
                                  f"import Hugging Face models (no from_hf_config)") from None
        except (ValueError, TypeError) as exc:
            raise StageInputError(f"stage {sid!r}: {where} cannot be imported as "
                                  f"{component.name!r}: {exc}") from None
        if self.config.max_seq_len is not None:
            arch = arch.model_copy(update={"max_seq_len": self.config.max_seq_len})
        return arch

    def check(self) -> None:
        path = _source(self.config, self.ctx.stage_id)
        from lmforge.modelio import weight_files

        self._architecture(json.loads((path / "config.json").read_text()), path / "config.json")
        weight_files(path)

    def run(self) -> Mapping[str, Any]:
        import tokenizers

        from lmforge.chat import save_tokenizer_artifact
        from lmforge.modelio import read_weights, save_model

        sid = self.ctx.stage_id
        path = _source(self.config, sid)
        hf_config = json.loads((path / "config.json").read_text())
        arch = self._architecture(hf_config, path / "config.json")
        weights = read_weights(path)
        vocab = int(hf_config.get("vocab_size") or weights[EMBED].shape[0])

        tok = tokenizers.Tokenizer.from_file(str(path / "tokenizer.json"))
        added = [t for t in SPECIAL_TOKENS if tok.token_to_id(t) is None]
        tok.add_special_tokens(added)
        grown = max(0, tok.get_vocab_size() - vocab)
        if grown:
            weights = _grow_rows(weights, grown, tied=bool(getattr(arch, "tie_embeddings", False)))
            vocab += grown
        try:
            state = arch.from_hf(weights)
        except ValueError as exc:
            raise StageInputError(f"stage {sid!r}: the weights in {path} do not match its "
                                  f"config.json: {exc}") from None

        save_model(self.ctx.output_dir("model"), state, arch, vocab)
        params = arch.num_parameters(vocab)
        self.ctx.write_artifact_meta("model", {
            "architecture": arch.model_dump(mode="json"), "vocab_size": vocab,
            "parameters": params, "stage": sid, "imported_from": str(path),
            "hf_model_type": hf_config.get("model_type"), "added_rows": grown})
        meta = save_tokenizer_artifact(self.ctx.output_dir("tokenizer"), tok, arch.max_seq_len,
                                       bos_token=_source_bos(path, tok))
        self.ctx.write_artifact_meta("tokenizer", {**meta, "imported_from": str(path),
                                                   "added_tokens": added})
        return {"parameters": params, "vocab_size": vocab, "added_tokens": len(added),
                "architecture": arch.type}


def _source_bos(path: Path, tok: Any) -> str | None:
    """The BOS named by the source's ``tokenizer_config.json`` (a string or an AddedToken dict),
    if the tokenizer has that token; an export's ``bos_token_id`` then names it too."""
    file = path / "tokenizer_config.json"
    try:
        bos = json.loads(file.read_text(encoding="utf-8")).get("bos_token") if file.is_file() \
            else None
    except (ValueError, AttributeError):
        return None
    if isinstance(bos, dict):
        bos = bos.get("content")
    return bos if isinstance(bos, str) and tok.token_to_id(bos) is not None else None


def _grow_rows(weights: dict[str, Any], extra: int, tied: bool) -> dict[str, Any]:
    """Append ``extra`` rows (the mean of the existing rows) to the embedding and, when untied,
    the output matrix."""
    import torch

    out = dict(weights)
    for name in (EMBED,) if tied else (EMBED, HEAD):
        if name in out:
            w = out[name]
            out[name] = torch.cat([w, w.float().mean(0, keepdim=True).to(w.dtype)
                                   .expand(extra, -1)], dim=0)
    return out
