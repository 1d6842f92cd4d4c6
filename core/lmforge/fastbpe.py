"""Fast encoding of text for pre-training with a trained byte-level BPE (via ``tiktoken``).

lmforge's ``bpe`` tokenizer is a Hugging Face ``tokenizers`` byte-level BPE: no normalizer, the
GPT-2 pre-tokenizer regex, bytes mapped to printable characters, merges learned in order so a
merged token's id grows with its merge's rank. ``tiktoken`` runs the same algorithm from
*mergeable ranks* (token bytes -> rank, merging the adjacent pair whose concatenation has the
lowest rank) in a faster Rust core. :func:`fast_encoder` converts a tokenizer when its
``tokenizer.json`` has exactly that shape (checked field by field; anything else — a
normalizer, another pre-tokenizer, a prefix space, ``ignore_merges`` — returns ``None`` and
callers keep Hugging Face's encoder) and when the conversion's ranks order the merges as the
tokenizer does (every merge's result id increases with its position in ``merges``).

The two algorithms pick merges by different keys (pair rank vs result rank), so a vocabulary
can in principle make them differ; :meth:`FastEncoder.verified` encodes a sample with both and
refuses the fast path on any difference, and callers use it on their own data before relying
on it. ``benchmarks/bench_curate.py --only tokenize`` asserts identical ids on a whole corpus.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

#: The GPT-2 pre-tokenization regex used by ``tokenizers``' ByteLevel(use_regex=True).
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


@lru_cache(maxsize=1)
def byte_decoder() -> dict[str, int]:
    """The inverse of the ByteLevel byte -> printable character map (GPT-2's)."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    chars, extra = list(printable), 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars)}


def _plain_byte_level(spec: dict[str, Any]) -> bool:
    """Whether ``tokenizer.json`` is a plain byte-level BPE that tiktoken reproduces."""
    model, pre = spec.get("model") or {}, spec.get("pre_tokenizer") or {}
    return (model.get("type") == "BPE" and not model.get("ignore_merges", False)
            and model.get("dropout") in (None, 0.0) and not model.get("continuing_subword_prefix")
            and not model.get("end_of_word_suffix") and spec.get("normalizer") is None
            and pre.get("type") == "ByteLevel" and pre.get("use_regex", True)
            and not pre.get("add_prefix_space", False))


class FastEncoder:
    """``encode_batch(texts)`` -> token ids, as the Hugging Face tokenizer gives them with
    ``add_special_tokens=False`` (the text of an added token, e.g. ``<|endoftext|>`` inside a
    document, becomes that token, as Hugging Face matches added tokens before the model)."""

    def __init__(self, path: Path, ranks: dict[bytes, int], special: dict[str, int],
                 threads: int) -> None:
        self.path = Path(path)
        self.threads = threads
        self._ranks = ranks
        self._special = special
        self._enc: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_enc": None}

    def _encoding(self) -> Any:
        if self._enc is None:
            import tiktoken

            self._enc = tiktoken.Encoding(f"lmforge:{self.path}", pat_str=GPT2_PATTERN,
                                          mergeable_ranks=self._ranks,
                                          special_tokens=self._special)
        return self._enc

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        enc = self._encoding()
        if self._special:
            return enc.encode_batch(list(texts), num_threads=self.threads,
                                    allowed_special="all")
        return enc.encode_ordinary_batch(list(texts), num_threads=self.threads)

    def verified(self, hf_tokenizer: Any, sample: Sequence[str]) -> bool:
        """Whether this encoder gives ``hf_tokenizer``'s ids on every text of ``sample``."""
        ours = self.encode_batch(sample)
        theirs = [e.ids for e in hf_tokenizer.encode_batch(list(sample),
                                                           add_special_tokens=False)]
        return ours == theirs


def fast_encoder(tokenizer_json: Path, threads: int = 2) -> FastEncoder | None:
    """A :class:`FastEncoder` for the tokenizer file, or ``None`` when it is not a plain
    byte-level BPE, ``tiktoken`` is not installed, or an added token is matched in a way
    tiktoken does not (``lstrip``/``rstrip``/``single_word``)."""
    try:
        import tiktoken  # noqa: F401
    except ImportError:
        return None
    spec = json.loads(Path(tokenizer_json).read_text("utf-8"))
    if not _plain_byte_level(spec):
        return None
    added_tokens = spec.get("added_tokens") or []
    if any(t.get("lstrip") or t.get("rstrip") or t.get("single_word") for t in added_tokens):
        return None
    decode = byte_decoder()
    vocab: dict[str, int] = spec["model"]["vocab"]
    added = {t["content"]: int(t["id"]) for t in added_tokens}
    ranks: dict[bytes, int] = {}
    try:
        for token, idx in vocab.items():
            if token in added:
                continue
            ranks[bytes(decode[ch] for ch in token)] = idx
    except KeyError:
        return None  # not a byte-level vocabulary
    if len(set(ranks.values())) != len(ranks) or any(bytes([b]) not in ranks
                                                     for b in range(256)):
        return None
    last = -1
    for merge in spec["model"].get("merges", []):
        a, b = merge if isinstance(merge, list) else merge.split(" ", 1)
        rank = vocab.get(a + b)
        if rank is None or rank <= last:
            return None  # ids do not follow merge order: tiktoken's ranks would differ
        last = rank
    return FastEncoder(Path(tokenizer_json), ranks, added, threads)
