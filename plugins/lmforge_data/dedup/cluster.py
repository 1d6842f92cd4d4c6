"""The distributed cluster step shared by every deduplicator: band keys -> components -> drops.

1. **Route** (in each partition's task): every ``(band, key words, doc id)`` row whose key is
   not ``NO_KEY`` goes to hash bucket ``mix(band, key) % buckets``; the partition writes one
   array per bucket.
2. **Bucket** (one task per bucket, in parallel): the rows of a bucket from every partition
   are sorted by ``(band, key, doc id)``; the documents that share a band key are joined to the
   first of them, and the connected components of those edges are computed
   (:func:`components`). The task keeps only ``(member, root)`` pairs of documents in
   components of two or more: the band rows themselves never leave the bucket.
3. **Merge** (a tree of tasks, ``fan_in`` inputs each): the pairs of several buckets are edges
   of one graph; its components are computed again. The last merge sees only documents that
   have a duplicate candidate, never the corpus; the bucket steps did the rest in parallel.

A component's root is its smallest document id: the first of the cluster in read order is
kept, whatever ran where. Arrays are ``uint64``; files are ``.npy`` written atomically.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lmforge.curation import NO_KEY
from lmforge_data.dedup.minhash import splitmix64

_U64 = np.uint64


def route(keys: np.ndarray, doc_ids: np.ndarray, buckets: int) -> list[np.ndarray]:
    """Split band-key rows by bucket: for each bucket a ``uint64 [m, 2 + words]`` array of
    ``(band, key words..., doc id)`` rows. ``keys``: ``[n, bands, words]``; ``doc_ids``: ``[n]``."""
    n, bands, words = keys.shape
    band = np.broadcast_to(np.arange(bands, dtype=np.uint64)[None, :], (n, bands)).reshape(-1)
    flat = keys.reshape(n * bands, words)
    ids = np.repeat(doc_ids.astype(np.uint64), bands)
    live = ~(flat == _U64(NO_KEY)).all(axis=1)
    band, flat, ids = band[live], flat[live], ids[live]
    with np.errstate(over="ignore"):
        where = splitmix64(flat[:, 0] ^ (band * _U64(0x9E3779B97F4A7C15))) % _U64(buckets)
    rows = np.concatenate([band[:, None], flat, ids[:, None]], axis=1)
    order = np.argsort(where, kind="stable")
    rows, where = rows[order], where[order]
    cuts = np.searchsorted(where, np.arange(1, buckets, dtype=np.uint64))
    return np.split(rows, cuts)


def components(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Connected components of the undirected edges ``u[i] - v[i]`` (uint64 ids).

    Returns ``(nodes, roots)``: every node that has an edge, sorted, and the smallest node of
    its component. Vectorised min-label hooking with pointer jumping (Shiloach-Vishkin style):
    each round every edge pulls both endpoints' labels to the smaller, then labels are
    compressed until each points at a label that points at itself."""
    if len(u) == 0:
        empty = np.zeros(0, dtype=np.uint64)
        return empty, empty
    nodes = np.unique(np.concatenate([u, v]))
    ui, vi = np.searchsorted(nodes, u), np.searchsorted(nodes, v)
    parent = np.arange(len(nodes))
    while True:
        pu, pv = parent[ui], parent[vi]
        low = np.minimum(pu, pv)
        new = parent.copy()
        np.minimum.at(new, pu, low)
        np.minimum.at(new, pv, low)
        while True:
            jumped = new[new]
            if np.array_equal(jumped, new):
                break
            new = jumped
        if np.array_equal(new, parent):
            break
        parent = new
    return nodes, nodes[parent]


def pairs_of(nodes: np.ndarray, roots: np.ndarray) -> np.ndarray:
    """``uint64 [k, 2]`` (member, root) of every node that is not its component's root."""
    keep = nodes != roots
    return np.stack([nodes[keep], roots[keep]], axis=1).astype(np.uint64)


def bucket_pairs(parts: Sequence[np.ndarray], words: int) -> np.ndarray:
    """The (member, root) pairs of one bucket's rows from every partition (step 2)."""
    rows = [p for p in parts if len(p)]
    if not rows:
        return np.zeros((0, 2), dtype=np.uint64)
    rows_all = np.concatenate(rows)
    # lexsort: last key is primary -> (band, key words..., doc id)
    order = np.lexsort([rows_all[:, c] for c in range(1 + words, -1, -1)])
    rows_all = rows_all[order]
    keycols = rows_all[:, :1 + words]
    same = np.zeros(len(rows_all), dtype=bool)
    same[1:] = (keycols[1:] == keycols[:-1]).all(axis=1)
    if not same.any():
        return np.zeros((0, 2), dtype=np.uint64)
    group = np.cumsum(~same) - 1
    first = rows_all[~same, -1]  # the smallest id of each group (ids sort last)
    members = rows_all[same, -1]
    return pairs_of(*components(members, first[group[same]]))


def merge_pairs(parts: Sequence[np.ndarray]) -> np.ndarray:
    """Join several (member, root) pair arrays into one, components recomputed (step 3)."""
    edges = [p for p in parts if len(p)]
    if not edges:
        return np.zeros((0, 2), dtype=np.uint64)
    e = np.concatenate(edges)
    return pairs_of(*components(e[:, 0], e[:, 1]))


def save(path: Path, array: np.ndarray) -> None:
    """``np.save`` to a temp name in the same folder, then rename (atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, array, allow_pickle=False)
    os.replace(tmp, path)


def load(path: Path) -> np.ndarray:
    return np.load(path, allow_pickle=False)
