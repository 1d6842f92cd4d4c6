"""The ``local`` executor: a pool of spawned worker processes on this machine.

``workers: 1`` runs every task in the calling process (no pool, no pickling). Otherwise tasks
go to a ``spawn`` pool (the parent may hold threads, e.g. pyarrow's, that ``fork`` would not
copy safely); at most ``2 * workers`` are in flight and results come back in task order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class LocalExecutor:
    """See the module docstring; ``workers`` None means the stage's ``num_proc``."""

    name = "local"

    def __init__(self, workers: int = 1) -> None:
        self.workers = max(1, int(workers))
        self._pool: Any = None

    def describe(self) -> str:
        return f"local ({self.workers} worker{'s' if self.workers > 1 else ''})"

    def _get_pool(self) -> Any:
        if self._pool is None:
            import multiprocessing as mp

            self._pool = mp.get_context("spawn").Pool(self.workers)
        return self._pool

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[R]:
        if self.workers <= 1 or len(items) <= 1:
            for item in items:
                yield fn(item)
            return
        pool = self._get_pool()
        pending: deque[Any] = deque()
        for item in items:
            pending.append(pool.apply_async(fn, (item,)))
            if len(pending) >= 2 * self.workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def factory(config: Any) -> LocalExecutor:
    return LocalExecutor(config.workers or 1)
