"""Contracts of data curation at scale: partitions, executors and deduplicators.

A curation stage (the data plugin's ``curate``) runs a *plan* of phases; each phase is a map of
one picklable function over independent tasks (a partition of the input, a hash bucket of
dedup keys, an output shard). Where the tasks run is the job of an ``executor`` component; what
makes two documents duplicates is the job of a ``dedup`` component. Third-party plugins may
provide either, and sources may split themselves into partitions, through the protocols below.
Nothing here imports numpy, pyarrow or ray: they are named only for type checkers.

Factory signatures (``ctx.build(kind, config)`` calls them):

=========  =========================  ==================
kind       factory call               returns
=========  =========================  ==================
executor   ``factory(config)``        :class:`Executor`
dedup      ``factory(config)``        :class:`Dedup`
=========  =========================  ==================

**Record contract.** What flows between phases is a *record*: a dict with the columns of the
dataset format (see :mod:`lmforge.datasetio`), produced by a :class:`PartitionedSource` (or
any ``source``, read whole as one partition). Each record that survives the filters gets a
*document id*, ``(partition ordinal << 32) | index within the partition``: ids increase in read
order, so "the first of a cluster in read order" is "the smallest id", whatever ran where.

**Determinism.** Given the same inputs and config, every phase writes the same bytes whatever
the executor and its number of workers: tasks are pure functions of their inputs, results come
back in task order, and ties are broken by document id.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

if TYPE_CHECKING:
    import numpy as np

T = TypeVar("T")
R = TypeVar("R")

#: A partition ordinal takes the high 32 bits of a document id, its index the low 32.
DOC_INDEX_BITS = 32


def doc_id(partition: int, index: int) -> int:
    """The document id of the ``index``-th kept record of partition ``partition``."""
    if not 0 <= index < 1 << DOC_INDEX_BITS:
        raise ValueError(f"a partition holds at most {1 << DOC_INDEX_BITS} records")
    return (partition << DOC_INDEX_BITS) | index


@dataclass(frozen=True)
class Partition:
    """One independently readable piece of a source.

    ``key`` names it stably (a file path with its size and modification time, ``file#rg3`` for
    a Parquet row group, a dataset shard number): the plan's fingerprint is made of the keys,
    so a resumed run notices inputs that changed. ``data`` is whatever the source needs to
    read it again, in another process or on another machine (picklable). ``nbytes`` is a size
    hint (0 when unknown).
    """

    key: str
    data: Any = None
    nbytes: int = 0


@runtime_checkable
class PartitionedSource(Protocol):
    """A ``source`` that can be read piece by piece, in parallel.

    ``partitions(target_bytes)`` lists the pieces in read order (grouping small files up to
    about ``target_bytes``, splitting large ones where the format allows); concatenating
    ``read(p)`` over them gives exactly the records of ``iter(source)``. ``read`` may count
    what it passed over in the source's ``skipped`` counter (a ``collections.Counter``).
    A source without these methods is read whole, as a single partition.
    """

    def partitions(self, target_bytes: int) -> Sequence[Partition]: ...

    def read(self, partition: Partition) -> Iterator[dict[str, Any]]: ...


@runtime_checkable
class Executor(Protocol):
    """Runs the tasks of one plan phase, possibly in other processes or on other machines.

    ``map(fn, items)`` calls ``fn(item)`` for every item and yields the results **in the
    order of** ``items`` as they become available (so the driver can commit progress and
    advance a bar). ``fn`` and the items are picklable; ``fn`` writes its files itself (the run
    directory must be visible to every worker) and returns a small picklable result. An
    exception raised by ``fn`` is re-raised by ``map`` as itself where possible (a
    :class:`lmforge.StageInputError` keeps its message). ``workers`` is the parallelism a plan
    should expect (it sizes hash buckets; it must not change any output). ``close`` releases
    workers; executors are also context managers.
    """

    workers: int

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[R]: ...

    def describe(self) -> str: ...

    def close(self) -> None: ...

    def __enter__(self) -> Executor: ...

    def __exit__(self, *exc: object) -> None: ...


@runtime_checkable
class Dedup(Protocol):
    """Which documents are (near-)duplicates, as *band keys*.

    ``keys(texts, digests)`` gets a batch of documents — ``texts``: each document's key text
    (its strings joined, normalised: NFKC, lower case, whitespace collapsed); ``digests``: the
    16-byte hash of the same normalised parts — and returns a ``uint64`` array of shape
    ``[len(texts), bands, words]``: two documents are duplicate candidates when, for some
    band, all ``words`` of their keys are equal (exact dedup: one band of the two words of the
    digest; MinHash: one word per LSH band). A row may be all ``NO_KEY`` in a band to take no
    part in it. Candidates are joined transitively (connected components) and the first
    document of each component in read order is kept. ``keys`` must be a pure function of its
    arguments (it runs in workers). ``describe_params`` returns the parameters shown in stats.
    """

    name: str
    bands: int
    words: int

    def keys(self, texts: Sequence[str], digests: Sequence[bytes]) -> np.ndarray: ...

    def describe_params(self) -> dict[str, Any]: ...


#: A band key equal to this in every word takes no part in its band (e.g. a document too short
#: to have a single shingle).
NO_KEY = 0xFFFF_FFFF_FFFF_FFFF
