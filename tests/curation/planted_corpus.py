"""A corpus with planted near-duplicates at known Jaccard similarities (tests and benchmarks).

Base documents are sequences of pseudo-words drawn from a vocabulary of ``vocab`` words, so two
unrelated documents share no 5-word shingle in practice. For each planted copy, words of its
base at random positions are replaced by random words, one at a time, until the Jaccard
similarity of the two documents' 5-word shingle sets falls to the target; the similarity
actually reached is recorded (it is what MinHash estimates). Copies are placed after their
base in read order, so "keep the first" keeps the base.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

SYLLABLES = ("ka ri to ne mu sa lo vi de pa go ru ti me na so bu ze fi la ko di ve po ma ni "
             "te su ga ro").split()


def shingles(text: str, n: int = 5) -> set[tuple[str, ...]]:
    words = text.split()
    if len(words) < n:
        return {tuple(words)}
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: str, b: str, n: int = 5) -> float:
    sa, sb = shingles(a, n), shingles(b, n)
    return len(sa & sb) / len(sa | sb)


@dataclass
class Planted:
    """``docs`` in read order; ``pairs``: (base index, copy index, Jaccard reached)."""

    docs: list[str] = field(default_factory=list)
    pairs: list[tuple[int, int, float]] = field(default_factory=list)


def make_vocab(rng: random.Random, size: int) -> list[str]:
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))))
    return sorted(words)


def edit_to(base: str, target: float, rng: random.Random, vocab: list[str]) -> tuple[str, float]:
    """A copy of ``base`` with the fewest random words replaced (positions in a random order,
    found by bisection) that brings its Jaccard with ``base`` to at most ``target``; returns
    (copy, Jaccard reached)."""
    words = base.split()
    ref = shingles(base)
    positions = list(range(len(words)))
    rng.shuffle(positions)
    new_words = rng.choices(vocab, k=len(positions))

    def edited(k: int) -> tuple[str, float]:
        w = list(words)
        for pos, nw in zip(positions[:k], new_words[:k]):
            w[pos] = nw
        text = " ".join(w)
        sh = shingles(text)
        return text, len(ref & sh) / len(ref | sh)

    lo, hi = 0, len(words)  # Jaccard is non-increasing in k: find the least k reaching target
    while lo < hi:
        mid = (lo + hi) // 2
        if edited(mid)[1] <= target:
            hi = mid
        else:
            lo = mid + 1
    return edited(lo)


def planted_corpus(n_base: int = 2000, levels: tuple[float, ...] = (0.95, 0.9, 0.85, 0.8, 0.7,
                                                                      0.6, 0.5, 0.3),
                   copies_per_level: int = 60, words: tuple[int, int] = (150, 300),
                   vocab: int = 5000, seed: int = 0) -> Planted:
    """``n_base`` distinct documents and ``copies_per_level`` copies at each Jaccard level,
    each copy of its own base, inserted a few documents after it."""
    rng = random.Random(seed)
    vocab_words = make_vocab(rng, vocab)
    bases = [" ".join(rng.choices(vocab_words, k=rng.randint(*words))) for _ in range(n_base)]
    plan: dict[int, tuple[str, float]] = {}
    chosen = rng.sample(range(n_base), len(levels) * copies_per_level)
    for k, b in enumerate(chosen):
        plan[b] = edit_to(bases[b], levels[k // copies_per_level], rng, vocab_words)
    out = Planted()
    pending: list[tuple[int, int, str, float]] = []  # (due position, base index, text, j)
    for i, text in enumerate(bases):
        out.docs.append(text)
        if i in plan:
            copy, j = plan[i]
            pending.append((i + rng.randint(1, 5), len(out.docs) - 1, copy, j))
        while pending and pending[0][0] <= i:
            _, base_at, copy, j = pending.pop(0)
            out.docs.append(copy)
            out.pairs.append((base_at, len(out.docs) - 1, j))
    for _, base_at, copy, j in pending:
        out.docs.append(copy)
        out.pairs.append((base_at, len(out.docs) - 1, j))
    return out


def s_curve(s: float, bands: int, rows: int) -> float:
    """Probability that two documents of Jaccard ``s`` share at least one LSH band."""
    return 1 - (1 - s ** rows) ** bands
