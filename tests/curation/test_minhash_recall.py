"""MinHash finds planted near-duplicates at the rate the LSH S-curve predicts, and nothing else.

The corpus (:mod:`tests.curation.planted_corpus`): 2,000 unrelated documents of 150-300
pseudo-words and 480 edited copies, 60 at each target Jaccard similarity 0.95, 0.9, 0.85,
0.8, 0.7, 0.6, 0.5 and 0.3 (the similarity actually reached is measured on the 5-word shingle
sets). With the default 14 bands of 8 rows, a pair of similarity s is a candidate with
probability 1 - (1 - s^8)^14: 0.9996 at 0.9, 0.92 at 0.8, 0.56 at 0.7, 0.05 at 0.5.

Measured on this corpus (seed 0), detected / predicted by the S-curve, per similarity bin:

=============  =====  ========  =========
similarity     pairs  detected  predicted
=============  =====  ========  =========
0.25 - 0.40    60     0.000     0.001
0.45 - 0.55    60     0.083     0.045
0.55 - 0.65    60     0.217     0.185
0.65 - 0.75    60     0.517     0.503
0.75 - 0.85    118    0.966     0.927
0.85 - 0.93    96     1.000     0.998
0.93 - 1.00    26     1.000     1.000
=============  =====  ========  =========

Recall 100 % of the 122 pairs with s >= 0.85; precision 100 % (the 285 documents put in a
cluster are all planted copies joined to their own base; no two unrelated documents ever).
"""

from __future__ import annotations

import math

import numpy as np

from lmforge.curation import DOC_INDEX_BITS
from lmforge_data.dedup import cluster
from lmforge_data.dedup.minhash import MinHashDedup
from tests.curation.planted_corpus import s_curve


def _labels(docs: list[str], dedup: MinHashDedup, buckets: int = 4,
            partitions: int = 3) -> dict[int, int]:
    """doc index -> root index, through the same route/bucket/merge steps the plan runs,
    with the documents spread over several partitions."""
    per = math.ceil(len(docs) / partitions)
    routed: list[list[np.ndarray]] = []
    for p in range(partitions):
        chunk = docs[p * per:(p + 1) * per]
        ids = (np.uint64(p) << np.uint64(DOC_INDEX_BITS)) + np.arange(len(chunk),
                                                                      dtype=np.uint64)
        routed.append(cluster.route(dedup.keys(chunk, []), ids, buckets))
    level0 = [cluster.bucket_pairs([r[b] for r in routed], dedup.words) for b in range(buckets)]
    pairs = cluster.merge_pairs(level0)

    def index(doc: int) -> int:
        return (doc >> DOC_INDEX_BITS) * per + (doc & ((1 << DOC_INDEX_BITS) - 1))

    return {index(int(m)): index(int(r)) for m, r in pairs}


def test_minhash_recall_precision_and_s_curve(planted):
    dedup = MinHashDedup()  # ngram 5, 14 bands x 8 rows: the defaults
    roots = _labels(planted.docs, dedup)
    planted_pairs = {(b, c) for b, c, _ in planted.pairs}
    # every clustered document is a planted copy joined to its own base (the first in read
    # order): precision 1.0, no unrelated documents joined
    assert all((root, member) in planted_pairs for member, root in roots.items())

    found = {(b, c): roots.get(c) == b for b, c, _ in planted.pairs}
    high = [found[(b, c)] for b, c, j in planted.pairs if j >= 0.85]
    assert len(high) >= 100 and sum(high) / len(high) >= 0.98  # recall at s >= 0.85

    # each similarity bin agrees with the S-curve within 4 standard errors (+0.02)
    for lo, hi in ((0.25, 0.4), (0.45, 0.55), (0.55, 0.65), (0.65, 0.75), (0.75, 0.85),
                   (0.85, 0.93), (0.93, 1.0)):
        members = [(j, found[(b, c)]) for b, c, j in planted.pairs if lo <= j < hi]
        assert len(members) >= 25, (lo, hi)
        expected = sum(s_curve(j, 14, 8) for j, _ in members) / len(members)
        observed = sum(f for _, f in members) / len(members)
        sd = math.sqrt(max(expected * (1 - expected), 0.01) / len(members))
        assert abs(observed - expected) <= 4 * sd + 0.02, (lo, hi, observed, expected)


def test_signatures_estimate_jaccard(planted):
    """The fraction of equal signature values estimates the shingle Jaccard similarity."""
    dedup = MinHashDedup(bands=32, rows=8)  # 256 permutations: standard error <= 0.031
    pairs = planted.pairs[::6]
    sig = dedup.signatures([planted.docs[i] for b, c, _ in pairs for i in (b, c)])
    estimates = (sig[0::2] == sig[1::2]).mean(axis=1)
    errors = np.abs(estimates - np.array([j for _, _, j in pairs]))
    assert errors.max() < 0.13 and errors.mean() < 0.03


def test_minhash_edge_cases():
    dedup = MinHashDedup(ngram=3, bands=4, rows=2)
    keys = dedup.keys(["", "!!! ???", "one two", "one, two!", "a b c d e f", "a b c d e g"], [])
    assert keys.shape == (6, 4, 1)
    assert (keys[0] == np.uint64(2**64 - 1)).all() and (keys[1] == keys[0]).all()  # no words
    # shorter than ngram: one shingle; punctuation ignored (texts come normalised: lower case)
    assert (keys[2] == keys[3]).all()
    assert not (keys[2] == keys[4]).any()
    # batching does not change keys
    small = MinHashDedup(ngram=3, bands=4, rows=2, batch_docs=2)
    assert (small.keys(["", "!!! ???", "one two", "one, two!", "a b c d e f", "a b c d e g"],
                       []) == keys).all()


def test_components_are_transitive_and_rooted_at_the_smallest_id():
    u = np.array([5, 7, 1, 9, 12], np.uint64)
    v = np.array([7, 9, 20, 3, 13], np.uint64)
    nodes, roots = cluster.components(u, v)
    assert dict(zip(nodes.tolist(), roots.tolist())) == {1: 1, 3: 3, 5: 3, 7: 3, 9: 3,
                                                         12: 12, 13: 12, 20: 1}
    # random graphs against a plain union-find
    rng = np.random.default_rng(0)
    for _ in range(20):
        u, v = rng.integers(0, 300, 200).astype(np.uint64), rng.integers(0, 300, 200)
        nodes, roots = cluster.components(u, v.astype(np.uint64))
        parent = list(range(300))

        def find(x: int) -> int:
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x
        for a, b in zip(u.tolist(), v.tolist()):
            ra, rb = find(a), find(b)
            parent[max(ra, rb)] = min(ra, rb)
        assert all(find(n) == r for n, r in zip(nodes.tolist(), roots.tolist()))
