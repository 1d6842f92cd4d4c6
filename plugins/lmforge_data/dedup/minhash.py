"""The ``minhash`` deduplicator: word n-gram shingles, MinHash signatures and LSH band keys.

For a batch of documents, all in numpy (no Python loop over words or shingles):

1. each document's words (``\\w+`` runs of the normalised text, or whitespace-separated tokens)
   are laid end to end in one byte buffer; a word's hash is a polynomial hash of its bytes
   taken from prefix sums (mod 2^64), finished with the splitmix64 mixer;
2. a shingle is ``ngram`` consecutive words of one document (a shorter document is one
   shingle of all its words); its hash mixes its word hashes in order;
3. permutation ``j`` maps a shingle hash ``x`` to the high 32 bits of ``a_j * x + b_j``
   (mod 2^64, ``a_j`` odd: multiply-add-shift hashing), and the signature is the minimum over
   the document's shingles: ``P(sig_j(A) == sig_j(B)) ~= J(A, B)``, the Jaccard similarity of
   the shingle sets;
4. the ``bands * rows`` signature values are cut into ``bands`` bands of ``rows`` values; a
   band's key is a 64-bit hash of its values. Two documents that agree on every value of one
   band share that band's key and become duplicate candidates. With similarity ``s`` that
   happens with probability ``1 - (1 - s^rows)^bands`` (the S-curve).

A document without a single word takes no part (its keys are ``NO_KEY``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from lmforge.curation import NO_KEY

_U64 = np.uint64
_WORD = re.compile(r"\w+")
_P = _U64(0x100000001B3)  # polynomial base (odd, so invertible mod 2^64)
_MIX = _U64(0x9E3779B97F4A7C15)
#: Shingle-hash rows computed at once per slice (memory ~ SLICE * permutations * 8 bytes).
SLICE = 16384


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser, elementwise on a uint64 array (a new array)."""
    with np.errstate(over="ignore"):
        z = x + _MIX
        z = (z ^ (z >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> _U64(27))) * _U64(0x94D049BB133111EB)
        return z ^ (z >> _U64(31))


def _powers(base: np.uint64, n: int) -> np.ndarray:
    out = np.full(n, base, dtype=np.uint64)
    if n:
        out[0] = 1
        with np.errstate(over="ignore"):
            np.multiply.accumulate(out, out=out)
    return out


class MinHashDedup:
    name = "minhash"
    words = 1

    def __init__(self, ngram: int = 5, bands: int = 14, rows: int = 8, seed: int = 1,
                 words_only: bool = True, batch_docs: int = 512) -> None:
        self.ngram, self.bands, self.rows, self.seed = ngram, bands, rows, seed
        self.words_only, self.batch_docs = words_only, batch_docs
        rng = np.random.Generator(np.random.PCG64(seed))
        perms = bands * rows
        self.a = rng.integers(0, 2**64, size=perms, dtype=np.uint64, endpoint=False) | _U64(1)
        self.b = rng.integers(0, 2**64, size=perms, dtype=np.uint64, endpoint=False)
        self._pinv = _U64(pow(int(_P), -1, 2**64))

    def describe_params(self) -> dict[str, Any]:
        return {"ngram": self.ngram, "bands": self.bands, "rows": self.rows,
                "permutations": self.bands * self.rows, "seed": self.seed,
                "threshold": round((1 / self.bands) ** (1 / self.rows), 4)}

    # -- the protocol ------------------------------------------------------------------------
    def keys(self, texts: Sequence[str], digests: Sequence[bytes] = ()) -> np.ndarray:
        """``uint64 [n, bands, 1]`` LSH band keys (see the module docstring)."""
        out = np.empty((len(texts), self.bands, 1), dtype=np.uint64)
        for start in range(0, len(texts), self.batch_docs):
            batch = texts[start:start + self.batch_docs]
            out[start:start + len(batch), :, 0] = self.band_keys(self.signatures(batch))
        return out

    # -- steps -------------------------------------------------------------------------------
    def shingles(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(hashes, doc)``: the uint64 hash of every shingle of the batch and the index of
        the document it belongs to (non-decreasing)."""
        if self.words_only:
            docs = [" ".join(_WORD.findall(t)) for t in texts]
        else:
            docs = [" ".join(t.split()) for t in texts]
        buf = np.frombuffer("\n".join(docs).encode("utf-8") + b"\n", dtype=np.uint8)
        sep = (buf == 32) | (buf == 10)
        # word [s, e): starts where a non-separator follows a separator (or the start)
        prev_sep = np.empty_like(sep)
        prev_sep[0] = True
        prev_sep[1:] = sep[:-1]
        starts = np.flatnonzero(~sep & prev_sep)
        next_sep = np.empty_like(sep)
        next_sep[-1] = True
        next_sep[:-1] = sep[1:]
        ends = np.flatnonzero(~sep & next_sep) + 1
        newlines = np.flatnonzero(buf == 10)
        word_doc = np.searchsorted(newlines, starts)  # docs end at their '\n'
        n = len(buf)
        with np.errstate(over="ignore"):
            weighted = (buf.astype(np.uint64) + _U64(1)) * _powers(_P, n)
            prefix = np.zeros(n + 1, dtype=np.uint64)
            np.cumsum(weighted, out=prefix[1:])
            inv = _powers(self._pinv, n)
            words = splitmix64((prefix[ends] - prefix[starts]) * inv[starts]
                               + (ends - starts).astype(np.uint64))
        return self._ngrams(words, word_doc, len(texts))

    def _ngrams(self, words: np.ndarray, word_doc: np.ndarray, ndocs: int
                ) -> tuple[np.ndarray, np.ndarray]:
        k = self.ngram
        counts = np.bincount(word_doc, minlength=ndocs)
        m = len(words) - k + 1
        parts_h, parts_d = [], []
        if m > 0:
            valid = word_doc[k - 1:] == word_doc[:m]
            with np.errstate(over="ignore"):
                h = words[:m].copy()
                for j in range(1, k):
                    h = splitmix64(h * _P + words[j:j + m])
            parts_h.append(h[valid])
            parts_d.append(word_doc[:m][valid])
        short = np.flatnonzero((counts > 0) & (counts < k))
        if len(short):  # one shingle of all the words of a document shorter than ngram
            first = np.concatenate([[0], np.cumsum(counts)])[short]
            with np.errstate(over="ignore"):
                h = words[first].copy()
                for j in range(1, k):
                    more = counts[short] > j
                    h[more] = splitmix64(h[more] * _P + words[first[more] + j])
            parts_h.append(h)
            parts_d.append(short)
        if not parts_h:
            return np.zeros(0, np.uint64), np.zeros(0, np.int64)
        hashes, doc = np.concatenate(parts_h), np.concatenate(parts_d)
        order = np.argsort(doc, kind="stable")
        return hashes[order], doc[order]

    def signatures(self, texts: Sequence[str]) -> np.ndarray:
        """``uint32 [n, bands * rows]`` MinHash signatures; all ones (0xFFFFFFFF) for a
        document without shingles."""
        hashes, doc = self.shingles(texts)
        perms = len(self.a)
        sig = np.full((len(texts), perms), 0xFFFFFFFF, dtype=np.uint32)
        if not len(hashes):
            return sig
        bounds = np.flatnonzero(np.diff(doc)) + 1
        doc_starts = np.concatenate([[0], bounds])
        docs_here = doc[doc_starts]
        # permutation-major [perms, shingles]: the per-document minimum is a reduceat over
        # contiguous runs of each row
        buf = np.empty((perms, min(SLICE, len(hashes))), dtype=np.uint64)
        a, b = self.a[:, None], self.b[:, None]
        i = 0
        while i < len(doc_starts):
            # whole documents per slice; a document longer than SLICE gets a slice of its own
            lo = doc_starts[i]
            j = max(int(np.searchsorted(doc_starts, lo + SLICE, side="right")), i + 1)
            hi = doc_starts[j] if j < len(doc_starts) else len(hashes)
            part = hashes[lo:hi]
            vals = buf[:, :len(part)] if len(part) <= buf.shape[1] else \
                np.empty((perms, len(part)), np.uint64)
            with np.errstate(over="ignore"):
                np.multiply(a, part[None, :], out=vals)
                vals += b
            vals >>= _U64(32)
            mins = np.minimum.reduceat(vals, doc_starts[i:j] - lo, axis=1)
            sig[docs_here[i:j]] = mins.T.astype(np.uint32)
            i = j
        return sig

    def band_keys(self, sig: np.ndarray) -> np.ndarray:
        """``uint64 [n, bands]``: a hash of each band's ``rows`` values; ``NO_KEY`` for a
        document without shingles."""
        n = len(sig)
        bands = sig.reshape(n, self.bands, self.rows).astype(np.uint64)
        with np.errstate(over="ignore"):
            h = np.full((n, self.bands), _U64(0x243F6A8885A308D3), dtype=np.uint64)
            for j in range(self.rows):
                h = splitmix64(h * _P + bands[:, :, j])
        h[h == _U64(NO_KEY)] = _U64(NO_KEY - 1)
        empty = (sig == 0xFFFFFFFF).all(axis=1)
        h[empty] = _U64(NO_KEY)
        return h


def factory(config: Any) -> MinHashDedup:
    return MinHashDedup(ngram=config.ngram, bands=config.bands, rows=config.rows,
                        seed=config.seed, words_only=config.lowercase_words_only,
                        batch_docs=config.batch_docs)
