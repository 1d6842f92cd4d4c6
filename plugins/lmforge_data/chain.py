"""Running the filters over records, in this process or in a pool of worker processes.

A :class:`FilterChain` is picklable (filters must be): each worker gets one copy through the
pool initializer, then receives chunks of records and returns, per record, the filtered record
(or ``None`` when dropped) and what each filter did. Chunks come back in submission order and
at most ``2 * num_proc`` are in flight, so a corpus is never held in memory and the output does
not depend on ``num_proc``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from lmforge_data import records as rec

# What one filter did to one record: (status, reason, counts) where status is
# "kept" | "dropped" | "modified". Filters after a drop do not run and report nothing.
Outcome = tuple[str, str, dict[str, int] | None]
Result = tuple[dict[str, Any] | None, list[Outcome]]


@dataclass
class FilterChain:
    """The stage's filters, in order, applied to records of ``fmt``."""

    filters: Sequence[Any]
    fmt: str

    def apply(self, record: dict[str, Any]) -> Result:
        """Run every filter on ``record``; see the module docstring.

        The keep/drop decision is taken on the record's texts joined by blank lines (so a
        length bound means the whole conversation); a filter that modifies the joined text is
        re-run on each text separately to get the modified record.
        """
        outcomes: list[Outcome] = []
        parts = rec.texts(record, self.fmt)
        meta: dict[str, Any] = {}
        for f in self.filters:
            joined = parts[0] if len(parts) == 1 else "\n\n".join(parts)
            result = f(joined)
            if result.metadata:
                meta.update(result.metadata)
            if not result.keep:
                outcomes.append(("dropped", result.reason or "dropped", None))
                return None, outcomes
            if result.text is None:
                outcomes.append(("kept", "", None))
                continue
            if len(parts) == 1:
                new_parts, counts = [result.text], dict(result.counts or {})
            else:
                new_parts, counts = [], {}
                for p in parts:
                    r = f(p)
                    new_parts.append(p if r.text is None else r.text)
                    for k, v in (r.counts or {}).items():
                        counts[k] = counts.get(k, 0) + v
            if new_parts == parts:
                outcomes.append(("kept", "", None))
                continue
            parts = new_parts
            outcomes.append(("modified", result.reason or "modified", counts or None))
        if any(o[0] == "modified" for o in outcomes):
            record = rec.with_texts(record, self.fmt, parts)
        if meta:
            record = {**record, rec.META_KEY: meta}
        return record, outcomes

    @property
    def metadata(self) -> bool:
        """Whether a filter of the chain labels records (its ``emits_metadata`` is true), so
        the output needs the ``metadata`` column."""
        return any(getattr(f, "emits_metadata", False) for f in self.filters)

    def apply_chunk(self, chunk: Sequence[dict[str, Any]]) -> list[Result]:
        return [self.apply(r) for r in chunk]


_WORKER_CHAIN: FilterChain | None = None


def _init_worker(chain: FilterChain) -> None:
    global _WORKER_CHAIN
    _WORKER_CHAIN = chain


def _run_chunk(chunk: list[dict[str, Any]]) -> list[Result]:
    assert _WORKER_CHAIN is not None
    return _WORKER_CHAIN.apply_chunk(chunk)


def run_chunks(chain: FilterChain, chunks: Iterable[list[dict[str, Any]]], num_proc: int
               ) -> Iterator[tuple[list[dict[str, Any]], list[Result]]]:
    """Yield ``(chunk, results)`` for each chunk, in order, using ``num_proc`` processes."""
    if num_proc <= 1 or not chain.filters:
        for chunk in chunks:
            yield chunk, chain.apply_chunk(chunk)
        return
    import multiprocessing as mp

    # spawn: the parent may hold threads (pyarrow's pool), which fork does not copy safely.
    ctx = mp.get_context("spawn")
    with ctx.Pool(num_proc, initializer=_init_worker, initargs=(chain,)) as pool:
        pending: deque[tuple[list[dict[str, Any]], Any]] = deque()
        for chunk in chunks:
            pending.append((chunk, pool.apply_async(_run_chunk, (chunk,))))
            if len(pending) >= 2 * num_proc:
                done, job = pending.popleft()
                yield done, job.get()
        while pending:
            done, job = pending.popleft()
            yield done, job.get()
