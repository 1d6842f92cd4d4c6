"""The chat format and the ``tokenizer`` artifact format, shared by tokenizer, SFT, DPO and eval.

A conversation is a list of ``{"role": "system" | "user" | "assistant", "content": str}``. It is
rendered as::

    <|user|>How do I ...?<|end|>\\n<|assistant|>Like this.<|end|>\\n

Each role marker and ``<|end|>`` is a special token. Training on chat data puts loss only on the
tokens of assistant contents and their closing ``<|end|>`` (so the model learns to stop).

A content follows its role marker directly, with no line break between them: special tokens
split the text before the byte-level pre-tokenizer runs, so a content is tokenized exactly as on
its own. With a line break after the marker, a reply that starts with whitespace (indented code,
a blank line) would merge with that line break into one token straddling the reply's start — a
first token without loss, a mask that disagrees with transformers', and a reply tokenized
differently in SFT than after a generation prompt. Now every reply token carries loss, the
generation prompt ends with ``<|assistant|>`` where the reply's tokens begin, and DPO's
``encode(reply + <|end|>)`` equals the reply's tokens in the conversation.

:func:`jinja_template` gives the same rendering as a ``transformers`` chat template, stored in
``tokenizer_config.json``; tests check the two agree token for token, and the loss mask with
transformers' ``return_assistant_tokens_mask``.

A ``tokenizer`` artifact folder holds ``tokenizer.json`` (Hugging Face ``tokenizers``),
``tokenizer_config.json`` and ``special_tokens_map.json`` (so ``transformers.AutoTokenizer``
loads it), and ``artifact.json`` with ``vocab_size`` and the special token ids.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmforge.errors import StageInputError

if TYPE_CHECKING:
    import tokenizers

ROLES = ("system", "user", "assistant")
EOS = "<|endoftext|>"
PAD = "<|pad|>"
END = "<|end|>"
SPECIAL_TOKENS: tuple[str, ...] = (EOS, PAD, "<|system|>", "<|user|>", "<|assistant|>", END)


def role_token(role: str) -> str:
    return f"<|{role}|>"


def validate_messages(messages: Any, where: str, need_assistant: bool = True) -> list[dict[str, str]]:
    """Check one conversation; raise :class:`StageInputError` naming ``where`` if malformed."""
    if not isinstance(messages, list) or not messages:
        raise StageInputError(f"{where}: 'messages' must be a non-empty list of "
                              f"{{role, content}} objects, got {type(messages).__name__}")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise StageInputError(f"{where}: message {i} must be {{role: one of {list(ROLES)}, "
                                  f"content: str}}, got {m!r:.120}")
        out.append({"role": m["role"], "content": m["content"]})
    if need_assistant and not any(m["role"] == "assistant" for m in out):
        raise StageInputError(f"{where}: conversation has no assistant turn, so there is nothing "
                              f"to train on; add a message with role 'assistant'")
    return out


def render(messages: Sequence[dict[str, str]], add_generation_prompt: bool = False
           ) -> tuple[str, list[tuple[int, int]]]:
    """Render a conversation; return the text and the ``[start, end)`` character spans of
    assistant contents including their ``<|end|>`` (the spans that carry training loss)."""
    parts: list[str] = []
    spans: list[tuple[int, int]] = []
    pos = 0
    for m in messages:
        head = role_token(m["role"])
        body = f"{m['content']}{END}"
        parts += [head, body, "\n"]
        start = pos + len(head)
        if m["role"] == "assistant":
            spans.append((start, start + len(body)))
        pos = start + len(body) + 1
    if add_generation_prompt:
        parts.append(role_token("assistant"))
    return "".join(parts), spans


def jinja_template() -> str:
    """The same rendering as a ``transformers`` chat template (``{% generation %}`` marks the
    assistant spans, so ``return_assistant_tokens_mask=True`` works in transformers too)."""
    return (
        "{% for message in messages %}"
        "{{ '<|' + message['role'] + '|>' }}"
        "{% if message['role'] == 'assistant' %}"
        "{% generation %}{{ message['content'] + '<|end|>' }}{% endgeneration %}"
        "{% else %}{{ message['content'] + '<|end|>' }}{% endif %}"
        "{{ '\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
    )


def encode_chat(tokenizer: tokenizers.Tokenizer, messages: Sequence[dict[str, str]],
                add_generation_prompt: bool = False) -> tuple[list[int], list[bool]]:
    """Token ids of the rendered conversation and, per token, whether it carries loss.

    A token carries loss when it lies inside an assistant span (by character offsets of the
    whole-string encoding, so the ids equal what ``transformers`` produces from the template).
    """
    text, spans = render(messages, add_generation_prompt)
    enc = tokenizer.encode(text, add_special_tokens=False)
    mask = []
    for start, end in enc.offsets:
        mask.append(any(s <= start and end <= e for s, e in spans) and end > start)
    return list(enc.ids), mask


def encode_reply(tokenizer: tokenizers.Tokenizer, prompt: Sequence[dict[str, str]], reply: str
                 ) -> tuple[list[int], list[int]]:
    """``(prompt_ids, reply_ids)`` of an assistant ``reply`` to the ``prompt`` messages, as
    preference training (DPO, reward models) and the ``reward-model`` reward encode it:
    ``encode_chat(prompt, add_generation_prompt=True)`` then the tokens of ``reply + END``
    encoded on their own (so the prompt's tokens are the same for every reply). The sequence
    ``prompt_ids + reply_ids`` ends with the end-of-turn token, where a reward model's score
    is read."""
    ids = encode_chat(tokenizer, prompt, add_generation_prompt=True)[0]
    return ids, list(tokenizer.encode(reply + END, add_special_tokens=False).ids)


@dataclass(frozen=True)
class TokenizerArtifact:
    """A loaded ``tokenizer`` artifact."""

    tokenizer: tokenizers.Tokenizer
    vocab_size: int
    eos_id: int
    pad_id: int
    path: Path

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)


def load_tokenizer(path: Path) -> TokenizerArtifact:
    """Load a ``tokenizer`` artifact folder written by any tokenizer plugin."""
    import tokenizers

    path = Path(path)
    file = path / "tokenizer.json"
    if not file.is_file():
        raise StageInputError(f"{path} is not a tokenizer artifact: tokenizer.json is missing")
    tok = tokenizers.Tokenizer.from_file(str(file))
    missing = [t for t in (EOS, PAD, END, role_token("assistant")) if tok.token_to_id(t) is None]
    if missing:
        raise StageInputError(f"{file}: special tokens {missing} are missing; lmforge's chat "
                              f"format needs {list(SPECIAL_TOKENS)}")
    meta_file = path / "artifact.json"
    meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
    return TokenizerArtifact(tokenizer=tok, vocab_size=int(meta.get("vocab_size", tok.get_vocab_size())),
                             eos_id=tok.token_to_id(EOS), pad_id=tok.token_to_id(PAD), path=path)


def tokenizer_files(model_max_length: int, bos_token: str | None = None
                    ) -> dict[str, dict[str, Any]]:
    """``tokenizer_config.json`` and ``special_tokens_map.json`` of a tokenizer artifact, so that
    ``transformers.AutoTokenizer`` loads it with lmforge's chat template. ``bos_token`` names the
    tokenizer's BOS when it has one (e.g. an imported Llama's ``<s>``); it is never added to
    encodings (``add_bos_token: false``)."""
    extra = [t for t in SPECIAL_TOKENS if t not in (EOS, PAD)]
    specials: dict[str, Any] = {"eos_token": EOS, "pad_token": PAD,
                                "additional_special_tokens": extra}
    if bos_token is not None:
        specials["bos_token"] = bos_token
    return {
        "tokenizer_config.json": {
            "tokenizer_class": "PreTrainedTokenizerFast", "chat_template": jinja_template(),
            "eos_token": EOS, "pad_token": PAD, "bos_token": bos_token, "unk_token": None,
            "additional_special_tokens": extra, "model_max_length": int(model_max_length),
            "clean_up_tokenization_spaces": False, "add_bos_token": False,
            "add_eos_token": False,
        },
        "special_tokens_map.json": specials,
    }


def save_tokenizer_artifact(out: Path, tokenizer: tokenizers.Tokenizer,
                            model_max_length: int, bos_token: str | None = None
                            ) -> dict[str, Any]:
    """Write ``tokenizer.json`` and the transformers files of a ``tokenizer`` artifact into
    ``out`` (each atomically); returns the artifact meta (``vocab_size``, special token ids) for
    ``artifact.json``. The tokenizer must contain every token of :data:`SPECIAL_TOKENS` (and
    ``bos_token``, when given)."""
    import os

    from lmforge.fsutil import atomic_write_text

    missing = [t for t in SPECIAL_TOKENS if tokenizer.token_to_id(t) is None]
    if missing:
        raise ValueError(f"the tokenizer lacks lmforge's special tokens {missing}")
    if bos_token is not None and tokenizer.token_to_id(bos_token) is None:
        raise ValueError(f"the tokenizer has no token {bos_token!r} to be its BOS")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".tokenizer.json.tmp"
    tokenizer.save(str(tmp))
    os.replace(tmp, out / "tokenizer.json")
    for name, content in tokenizer_files(model_max_length, bos_token).items():
        atomic_write_text(out / name, json.dumps(content, indent=2))
    return {"vocab_size": tokenizer.get_vocab_size(),
            "special_tokens": {t: tokenizer.token_to_id(t) for t in SPECIAL_TOKENS}}
