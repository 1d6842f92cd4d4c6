"""The language model behind a local judge: an lmforge ``model`` artifact or a Hugging Face
folder, behind one small interface (imports torch).

:class:`JudgeLM` gives the judges what they ask of a model:

* ``chat_ids(messages)`` — the token ids of a conversation followed by the assistant's
  generation prompt (lmforge's chat format for an artifact; the folder's own chat template, or
  ``role: content`` lines when it has none, for a Hugging Face model);
* ``token_id(text)`` — the first token of ``text`` (an answer option);
* ``next_logprobs(prompts, token_ids)`` — ``[N, K]`` log-probabilities, under the full
  next-token distribution after each prompt, of the K given tokens (batched, left padded);
* ``reply_logprobs(prompts, replies)`` — per reply, the summed log-probability of its tokens
  after the prompt and their count (batched, right padded).

Prompts longer than the model's context are the caller's to shorten (``max_len``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from lmforge import StageInputError

Messages = Sequence[Mapping[str, str]]


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "bfloat16":
        return torch.bfloat16
    if name == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


class JudgeLM:
    """Shared batching; subclasses implement :meth:`_last_logits` and :meth:`_token_logprobs`."""

    label: str = "model"
    max_len: int = 0
    pad_id: int = 0

    def __init__(self, device: Any, batch_size: int) -> None:
        self.device = torch.device(device)
        self.batch_size = batch_size

    # -- tokenisation (subclasses) ----------------------------------------------------------
    def chat_ids(self, messages: Messages) -> list[int]:
        raise NotImplementedError

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def token_id(self, text: str) -> int:
        ids = self.encode(text)
        if not ids:
            raise StageInputError(f"judge {self.label}: option {text!r} encodes to no token")
        return ids[0]

    # -- model calls ------------------------------------------------------------------------
    def _last_logits(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _token_logprobs(self, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def next_logprobs(self, prompts: Sequence[Sequence[int]], token_ids: Sequence[int]
                      ) -> torch.Tensor:
        """``[N, K]`` float64 on CPU: ``log p(token_ids[k] | prompts[n])``."""
        out = []
        index = torch.tensor(list(token_ids), device=self.device)
        for start in range(0, len(prompts), self.batch_size):
            batch = [list(p) for p in prompts[start:start + self.batch_size]]
            width = max(len(p) for p in batch)
            ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for r, p in enumerate(batch):
                ids[r, width - len(p):] = torch.tensor(p, dtype=torch.long)
                mask[r, width - len(p):] = 1
            logits = self._last_logits(ids.to(self.device), mask.to(self.device)).float()
            logp = torch.log_softmax(logits, dim=-1)
            out.append(logp[:, index].double().cpu())
        return torch.cat(out) if out else torch.zeros((0, len(token_ids)), dtype=torch.float64)

    @torch.no_grad()
    def reply_logprobs(self, prompts: Sequence[Sequence[int]], replies: Sequence[Sequence[int]]
                       ) -> list[tuple[float, int]]:
        """``(sum of log p(reply tokens | prompt, earlier reply tokens), count)`` per pair.
        A pair longer than ``max_len + 1`` tokens loses prompt tokens from the start (and then
        reply tokens from the end)."""
        rows = []
        for p, r in zip(prompts, replies, strict=True):
            p, r = list(p), list(r)
            if not r:
                raise StageInputError(f"judge {self.label}: an empty reply has no likelihood")
            keep = self.max_len + 1
            r = r[:keep - 1]
            p = p[-(keep - len(r)):] if p else []
            rows.append((p + r, len(p)))
        out: list[tuple[float, int]] = []
        for start in range(0, len(rows), self.batch_size):
            batch = rows[start:start + self.batch_size]
            width = max(len(s) for s, _ in batch) - 1
            ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
            labels = torch.full((len(batch), width), -100, dtype=torch.long)
            for i, (seq, n_prompt) in enumerate(batch):
                ids[i, :len(seq) - 1] = torch.tensor(seq[:-1])
                target = torch.tensor(seq[1:])
                # position t predicts seq[t + 1]; reply tokens start at seq[n_prompt]
                scored = torch.arange(1, len(seq)) >= max(n_prompt, 1)
                labels[i, :len(seq) - 1] = torch.where(scored, target, torch.full_like(target,
                                                                                       -100))
            lp = self._token_logprobs(ids.to(self.device), labels.to(self.device))
            counts = (labels != -100).sum(-1)
            out += [(float(s), int(n)) for s, n in zip(lp.double().cpu(), counts, strict=True)]
        return out

    def close(self) -> None:
        return None


class ArtifactLM(JudgeLM):
    """An lmforge ``model`` artifact and ``tokenizer`` artifact, called through the
    model-call contract (``module(ids, attention_mask=..., logits_to_keep=1)``)."""

    def __init__(self, model: Any, tokenizer: Any, label: str, device: Any,
                 batch_size: int) -> None:
        super().__init__(device, batch_size)
        self.model = model
        self.tokenizer = tokenizer
        self.label = label
        self.max_len = int(model.max_seq_len)
        self.pad_id = tokenizer.pad_id

    def chat_ids(self, messages: Messages) -> list[int]:
        from lmforge.chat import encode_chat

        return encode_chat(self.tokenizer.tokenizer, list(messages),
                           add_generation_prompt=True)[0]

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    def reply_ids(self, reply: str) -> list[int]:
        from lmforge.chat import END

        return self.tokenizer.encode(reply + END)

    def _last_logits(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.model(ids, attention_mask=mask, logits_to_keep=1).logits[:, -1]

    def _token_logprobs(self, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        from lmforge.training.losses import sequence_logprobs

        return sequence_logprobs(self.model, ids, labels)


class HFLM(JudgeLM):
    """A local Hugging Face folder loaded with transformers (``local_files_only``)."""

    def __init__(self, path: str, device: Any, batch_size: int, dtype: str) -> None:
        super().__init__(device, batch_size)
        try:
            import transformers
        except ImportError:
            raise StageInputError(f"judge model {path}: loading a Hugging Face folder needs "
                                  f"transformers; pip install transformers") from None
        self.label = Path(path).name
        try:
            self.tok = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
            self.model = transformers.AutoModelForCausalLM.from_pretrained(
                path, local_files_only=True, dtype=resolve_dtype(dtype, self.device))
        except (OSError, ValueError) as exc:
            raise StageInputError(f"judge model {path}: cannot be loaded with transformers: "
                                  f"{exc}") from None
        self.model.to(self.device).eval()
        cfg = self.model.config
        self.max_len = int(getattr(cfg, "max_position_embeddings", 0) or 2048)
        pad = self.tok.pad_token_id
        self.pad_id = int(pad if pad is not None else (self.tok.eos_token_id or 0))

    def chat_ids(self, messages: Messages) -> list[int]:
        if getattr(self.tok, "chat_template", None):
            out = self.tok.apply_chat_template(list(messages), add_generation_prompt=True,
                                               tokenize=True)
            if isinstance(out, Mapping) or hasattr(out, "input_ids"):
                out = out["input_ids"]
            return list(out)
        text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "
        return self.encode(text)

    def encode(self, text: str) -> list[int]:
        return list(self.tok.encode(text, add_special_tokens=False))

    def reply_ids(self, reply: str) -> list[int]:
        eos = [self.tok.eos_token_id] if self.tok.eos_token_id is not None else []
        return self.encode(reply) + eos

    def _positions(self, mask: torch.Tensor) -> torch.Tensor:
        return (mask.long().cumsum(-1) - 1).clamp_min(0)

    def _last_logits(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=self._positions(mask),
                         logits_to_keep=1)
        return out.logits[:, -1]

    def _token_logprobs(self, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = self.model(input_ids=ids).logits.float()
        logp = torch.log_softmax(logits, -1)
        keep = labels != -100
        picked = logp.gather(-1, labels.clamp_min(0)[..., None]).squeeze(-1)
        return (picked * keep).sum(-1)


def load_judge_lm(config: Any, stage: Any, device: Any, name: str) -> JudgeLM:
    """The judge model named by ``config`` (``path`` or the ``model_input`` stage input with
    its tokenizer), on ``device``, in eval mode."""
    if config.path is not None:
        return HFLM(config.path, device, config.batch_size, config.dtype)
    from lmforge.chat import load_tokenizer

    model_art = stage_input(stage, config.model_input, name, "model")
    tok_name = tokenizer_input(config, stage.inputs)
    tok_art = stage_input(stage, tok_name, name, "tokenizer")
    dev = torch.device(device)
    model = stage.load_model(model_art, device=dev, dtype=resolve_dtype(config.dtype, dev))
    model.eval()
    tokenizer = load_tokenizer(tok_art.path)
    label = f"{model_art.stage_id}@{model_art.hash[:12]}"
    return ArtifactLM(model, tokenizer, label, dev, config.batch_size)


def tokenizer_input(config: Any, inputs: Mapping[str, Any]) -> str:
    """The stage input holding the judge's tokenizer (see ``tokenizer_input``)."""
    if config.tokenizer_input is not None:
        return config.tokenizer_input
    return "judge_tokenizer" if "judge_tokenizer" in inputs else "tokenizer"


def stage_input(stage: Any, slot: str, judge: str, kind: str) -> Any:
    art = stage.inputs.get(slot)
    if art is None:
        raise StageInputError(f"stage {stage.stage_id!r}: judge {judge!r} reads its {kind} from "
                              f"input {slot!r}, which is not wired; wire it (or set the judge's "
                              f"path to a local Hugging Face folder)")
    if art.kind != kind:
        raise StageInputError(f"stage {stage.stage_id!r}: judge {judge!r} needs a {kind} in "
                              f"input {slot!r}, got a {art.kind}")
    return art


def fit(render: Callable[[float], list[int]], limit: int, what: str) -> tuple[list[int], bool]:
    """Token ids of ``render(fraction)`` no longer than ``limit``: ``render(1.0)`` when it fits,
    else with the free texts cut to a smaller fraction of their length (the question and the
    answer prompt are kept whole). Returns the ids and whether anything was cut."""
    frac = 1.0
    ids = render(frac)
    tries = 0
    while len(ids) > limit:
        tries += 1
        frac *= max(0.05, min(0.9, 0.95 * limit / len(ids)))
        if tries > 40 or frac < 1e-4:
            raise StageInputError(f"{what}: the judge's template alone is longer than the "
                                  f"judge model's context ({limit} tokens); shorten the "
                                  f"template or use a judge with a longer context")
        ids = render(frac)
    return ids, tries > 0


def cut(text: str, frac: float) -> str:
    """The first ``frac`` of ``text`` (all of it at 1.0), marked with an ellipsis when cut."""
    if frac >= 1.0:
        return text
    keep = int(len(text) * frac)
    return text[:keep] + " [...]"
