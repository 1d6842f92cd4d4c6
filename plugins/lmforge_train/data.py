"""Tokenising datasets for training, cached under the stage's work folder.

* text → one flat token stream (each document followed by EOS), read as overlapping blocks of
  ``seq_len + 1`` tokens with stride ``seq_len`` (every token but the first is a target once);
* chat → one row per conversation, padded to ``seq_len + 1`` tokens, with a per-token loss mask
  (assistant tokens only, from :func:`lmforge.chat.encode_chat`).

Caches are keyed by the dataset and tokenizer content hashes and written atomically
(:func:`lmforge.training.stagekit.cached_arrays`), so a resumed stage reuses them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmforge.chat import TokenizerArtifact, encode_chat, validate_messages
from lmforge.datasetio import load_split
from lmforge.errors import StageInputError
from lmforge.training.sampling import EpochSampler
from lmforge.training.stagekit import cached_arrays, token_dtype

IGNORE = -100


# -- text ---------------------------------------------------------------------------------------
def _encode_text(batch: dict[str, list], indices: list[int], tokenizer: Any, eos_id: int,
                 where: str, fast: Any = None) -> dict[str, list]:
    texts = batch["text"]
    for t, i in zip(texts, indices):
        if not isinstance(t, str):
            raise StageInputError(f"{where}, row {i}: 'text' must be a string, got "
                                  f"{type(t).__name__}; fix or drop that record in the data stage")
    if fast is not None:  # lmforge.fastbpe: the same ids, several times faster
        return {"ids": [ids + [eos_id] for ids in fast.encode_batch(texts)]}
    encs = tokenizer.encode_batch(texts, add_special_tokens=False)
    return {"ids": [e.ids + [eos_id] for e in encs]}


def _fast_encoder(tok: TokenizerArtifact, ds: Any, sample: int = 256) -> Any:
    """:func:`lmforge.fastbpe.fast_encoder` for ``tok`` when it reproduces Hugging Face's ids
    on the first ``sample`` documents of ``ds``; else ``None`` (the Hugging Face encoder is
    used)."""
    from lmforge.fastbpe import fast_encoder

    fast = fast_encoder(tok.path / "tokenizer.json")
    if fast is None:
        return None
    texts = [t for t in ds.select(range(min(sample, ds.num_rows)))["text"] if isinstance(t, str)]
    return fast if fast.verified(tok.tokenizer, texts) else None


def token_stream(folder: Path, dataset: Path, split: str, tok: TokenizerArtifact,
                 num_proc: int = 1) -> np.ndarray:
    """The split's documents as one token stream ``[n_tokens]`` (uint16 or int32, memory-mapped)."""
    where = f"dataset {dataset}, split {split!r}"

    def build(tmp: Path) -> dict[str, Any]:
        ds = load_split(dataset, split)
        if "text" not in ds.column_names:
            raise StageInputError(f"{where} has no 'text' column (columns: {ds.column_names}); "
                                  f"pre-training needs a dataset/text artifact")
        fast = _fast_encoder(tok, ds)
        ds = ds.map(_encode_text, batched=True, with_indices=True, num_proc=num_proc,
                    remove_columns=ds.column_names, desc=f"tokenising {split}",
                    fn_kwargs={"tokenizer": tok.tokenizer, "eos_id": tok.eos_id, "where": where,
                               "fast": fast})
        dtype = token_dtype(tok.vocab_size)
        raw = tmp / "tokens.bin"
        n = 0
        with open(raw, "wb") as fh:
            for batch in ds.iter(batch_size=1024):
                if batch["ids"]:
                    arr = np.concatenate([np.asarray(x, dtype=dtype) for x in batch["ids"]])
                    fh.write(arr.tobytes())
                    n += arr.size
        # Re-wrap the raw stream as a .npy (header + same bytes) without loading it.
        out = np.lib.format.open_memmap(tmp / "tokens.npy", mode="w+", dtype=dtype, shape=(n,))
        if n:
            out[:] = np.memmap(raw, dtype=dtype, mode="r", shape=(n,))
        out.flush()
        del out
        raw.unlink()
        return {"tokens": n, "documents": ds.num_rows, "split": split}

    arrays, _ = cached_arrays(folder, build)
    return arrays["tokens"]


class BlockBatches:
    """Micro-batches of packed blocks: ``input_ids``/``labels`` LongTensor ``[B, seq_len]``.

    Block ``i`` is ``stream[i * seq_len : i * seq_len + seq_len + 1]``; the order comes from an
    :class:`EpochSampler`, so a step's batches are a pure function of ``(seed, step)``.
    """

    def __init__(self, stream: np.ndarray, seq_len: int, sampler: EpochSampler | None = None
                 ) -> None:
        self.stream, self.seq_len, self.sampler = stream, seq_len, sampler
        self.num_blocks = max(0, (len(stream) - 1) // seq_len)

    def blocks(self, idx: np.ndarray) -> dict[str, torch.Tensor]:
        L = self.seq_len
        rows = np.stack([np.asarray(self.stream[i * L:i * L + L + 1], dtype=np.int64) for i in idx])
        t = torch.from_numpy(rows)
        return {"input_ids": t[:, :-1].contiguous(), "labels": t[:, 1:].contiguous()}

    def micro_batches(self, step: int, rank: int, world_size: int) -> list[dict[str, torch.Tensor]]:
        assert self.sampler is not None
        return [self.blocks(self.sampler.indices(step, m, rank))
                for m in range(self.sampler.grad_accum)]

    def sequential(self, batch_size: int, max_batches: int, rank: int = 0, world_size: int = 1):
        """In-order batches for evaluation (this rank's share), at most ``max_batches``."""
        order = np.arange(self.num_blocks)[rank::world_size]
        for b in range(min(max_batches, -(-len(order) // batch_size))):
            yield self.blocks(order[b * batch_size:(b + 1) * batch_size])


# -- chat ---------------------------------------------------------------------------------------
def _encode_chat(batch: dict[str, list], indices: list[int], tokenizer: Any, where: str
                 ) -> dict[str, list]:
    ids_out, mask_out = [], []
    for messages, i in zip(batch["messages"], indices):
        msgs = validate_messages(messages, f"{where}, row {i}")
        ids, mask = encode_chat(tokenizer, msgs)
        ids_out.append(ids)
        mask_out.append([int(m) for m in mask])
    return {"ids": ids_out, "mask": mask_out}


def chat_arrays(folder: Path, dataset: Path, split: str, tok: TokenizerArtifact, seq_len: int,
                num_proc: int = 1) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Conversations of a split as padded arrays (memory-mapped):

    ``tokens`` ``[N, seq_len + 1]`` (pad id after the end), ``mask`` ``[N, seq_len + 1]`` uint8
    (1 where the token is an assistant token, i.e. a loss target), ``lengths`` ``[N]`` and
    ``keep`` — indices of rows that still have a loss target after truncation.
    """
    where = f"dataset {dataset}, split {split!r}"
    width = seq_len + 1

    def build(tmp: Path) -> dict[str, Any]:
        ds = load_split(dataset, split)
        if "messages" not in ds.column_names:
            raise StageInputError(f"{where} has no 'messages' column (columns: "
                                  f"{ds.column_names}); SFT needs a dataset/chat artifact")
        ds = ds.map(_encode_chat, batched=True, with_indices=True, num_proc=num_proc,
                    remove_columns=ds.column_names, desc=f"tokenising {split}",
                    fn_kwargs={"tokenizer": tok.tokenizer, "where": where})
        n = ds.num_rows
        dtype = token_dtype(tok.vocab_size)
        tokens = np.lib.format.open_memmap(tmp / "tokens.npy", "w+", dtype, (n, width))
        mask = np.lib.format.open_memmap(tmp / "mask.npy", "w+", np.uint8, (n, width))
        lengths = np.zeros(n, dtype=np.int32)
        keep, truncated, row = [], 0, 0
        for batch in ds.iter(batch_size=1024):
            for ids, m in zip(batch["ids"], batch["mask"]):
                k = min(len(ids), width)
                truncated += len(ids) > width
                tokens[row, :k] = ids[:k]
                tokens[row, k:] = tok.pad_id
                mask[row, :k] = m[:k]
                mask[row, k:] = 0
                lengths[row] = k
                if k > 1 and mask[row, 1:k].any():  # position 0 is never a target
                    keep.append(row)
                row += 1
        tokens.flush()
        mask.flush()
        del tokens, mask
        np.save(tmp / "lengths.npy", lengths)
        np.save(tmp / "keep.npy", np.asarray(keep, dtype=np.int64))
        return {"rows": n, "kept": len(keep), "truncated": int(truncated), "split": split}

    return cached_arrays(folder, build)


class ChatBatches:
    """Micro-batches of conversations: ``input_ids`` ``[B, T]`` and ``labels`` ``[B, T]`` with
    ``-100`` wherever the next token is not an assistant token (and on padding); ``T`` is the
    longest conversation in the micro-batch minus one (at most ``seq_len``)."""

    def __init__(self, arrays: dict[str, np.ndarray], sampler: EpochSampler | None = None) -> None:
        self.tokens, self.mask = arrays["tokens"], arrays["mask"]
        self.lengths, self.keep = arrays["lengths"], arrays["keep"]
        self.sampler = sampler

    def rows(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        width = int(self.lengths[rows].max())
        tok = torch.from_numpy(np.asarray(self.tokens[rows, :width], dtype=np.int64))
        mask = torch.from_numpy(np.asarray(self.mask[rows, :width], dtype=bool))
        labels = torch.where(mask[:, 1:], tok[:, 1:], torch.full_like(tok[:, 1:], IGNORE))
        return {"input_ids": tok[:, :-1].contiguous(), "labels": labels.contiguous()}

    def micro_batches(self, step: int, rank: int, world_size: int) -> list[dict[str, torch.Tensor]]:
        assert self.sampler is not None
        return [self.rows(np.sort(self.keep[self.sampler.indices(step, m, rank)]))
                for m in range(self.sampler.grad_accum)]

    def sequential(self, batch_size: int, max_batches: int, rank: int = 0, world_size: int = 1):
        order = np.asarray(self.keep)[rank::world_size]
        for b in range(min(max_batches, -(-len(order) // batch_size))):
            yield self.rows(order[b * batch_size:(b + 1) * batch_size])
