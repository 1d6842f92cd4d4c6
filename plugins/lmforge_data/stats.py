"""Curation statistics that merge across partitions and workers.

Every counter is a sum, so the stats of a run are the same whatever ran where: each partition
task returns its own :class:`FilterStats` dicts and source counters, and the driver adds them
in partition order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from lmforge_data.chain import Outcome


class FilterStats:
    """Per-filter counters: seen/kept/dropped/modified, reasons, redaction counts."""

    def __init__(self, index: int, name: str) -> None:
        self.index, self.name = index, name
        self.kept = self.dropped = self.modified = 0
        self.dropped_by: Counter[str] = Counter()
        self.modified_by: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()

    def add(self, outcome: Outcome) -> None:
        status, reason, counts = outcome
        if status == "dropped":
            self.dropped += 1
            self.dropped_by[reason] += 1
        elif status == "modified":
            self.modified += 1
            self.modified_by[reason] += 1
            self.counts.update(counts or {})
        else:
            self.kept += 1

    def merge(self, other: Mapping[str, Any]) -> None:
        """Add the counters of another worker's :meth:`as_dict` for the same filter."""
        self.kept += other["kept"]
        self.dropped += other["dropped"]
        self.modified += other["modified"]
        self.dropped_by.update(other["dropped_by_reason"])
        self.modified_by.update(other["modified_by_reason"])
        self.counts.update(other["counts"])

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "name": self.name,
                "seen": self.kept + self.dropped + self.modified, "kept": self.kept,
                "dropped": self.dropped, "modified": self.modified,
                "dropped_by_reason": dict(self.dropped_by.most_common()),
                "modified_by_reason": dict(self.modified_by.most_common()),
                "counts": dict(sorted(self.counts.items()))}


def merge_filters(names: list[str], parts: Iterable[list[Mapping[str, Any]]]
                  ) -> list[FilterStats]:
    """One :class:`FilterStats` per filter, the sum of every partition's dicts."""
    out = [FilterStats(i, n) for i, n in enumerate(names)]
    for part in parts:
        for st, d in zip(out, part):
            st.merge(d)
    return out
