"""Two planted classes of documents for the classifier tests: 'science' prose and 'sales' spam,
made from disjoint vocabularies with shared function words, so a working classifier separates
them and a broken one (constant, inverted, unlearned) does not."""

from __future__ import annotations

import random

FUNCTION = "the a of and to in is that it for on with as was at by this be are from".split()
SCIENCE = ("cell protein molecule energy electron orbit planet gravity experiment hypothesis "
           "measurement theory particle enzyme genome temperature pressure reaction species "
           "evolution climate sediment telescope galaxy neuron membrane catalyst").split()
SALES = ("discount offer buy cheap deal price order shipping coupon sale bargain limited "
         "exclusive bonus subscribe checkout free gift voucher promo clearance bestseller "
         "refund warranty bundle cart").split()


def document(vocab: list[str], rng: random.Random, words: int = 60) -> str:
    out = []
    for _ in range(words):
        out.append(rng.choice(vocab) if rng.random() < 0.45 else rng.choice(FUNCTION))
    text = " ".join(out)
    return text[0].upper() + text[1:] + "."


def planted(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """``n`` science and ``n`` sales documents, deterministic for ``seed``."""
    rng = random.Random(seed)
    return ([document(SCIENCE, rng) for _ in range(n)],
            [document(SALES, rng) for _ in range(n)])
