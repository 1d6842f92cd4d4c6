"""The ``ray`` executor: each plan phase is a Ray Data dataset of tasks mapped by ``fn``.

Without ``address`` Ray starts on this machine (``num_cpus`` CPUs, no dashboard) and stops when
the stage ends; with ``address`` (``ray://host:10001`` or ``auto``) it joins a running cluster,
whose nodes must have the same lmforge and plugins installed and see the run directory at the
same path (tasks write their partition files there). An already initialised Ray (a notebook, a
test session) is used as it is and left running.

Ray Data runs one task per block with ``preserve_order`` set, so results come back in task
order and the output equals the ``local`` executor's byte for byte.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from lmforge import LmforgeError, StageInputError

T = TypeVar("T")
R = TypeVar("R")


def _call(row: dict[str, Any], fn: Callable[[Any], Any]) -> dict[str, Any]:
    import pickle

    item = pickle.loads(row["item"])
    try:
        return {"index": row["index"], "result": pickle.dumps(fn(item)), "error": b""}
    except LmforgeError as exc:
        # sent back as a value: Ray would wrap it and lose the message the user needs
        return {"index": row["index"], "result": b"", "error": pickle.dumps(exc)}


class RayExecutor:
    name = "ray"

    def __init__(self, config: Any) -> None:
        self.config = config
        self._started = False
        self.workers = 1
        self._init()

    def _init(self) -> None:
        try:
            import ray
        except ImportError:
            raise StageInputError("the ray executor needs Ray: pip install 'lmforge[ray]' "
                                  "(or pip install 'ray[data]')") from None
        c = self.config
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                      "configure_logging": False}
            if c.address:
                kwargs["address"] = c.address
            else:
                kwargs["num_cpus"] = c.num_cpus
            try:
                ray.init(**kwargs)
            except Exception as exc:  # noqa: BLE001 - ConnectionError, RuntimeError ...
                where = f"the Ray cluster at {c.address!r}" if c.address else "a local Ray"
                raise StageInputError(f"ray executor: cannot start {where}: "
                                      f"{type(exc).__name__}: {exc}") from None
            self._started = True
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.workers = max(1, min(cpus, c.max_workers or cpus))
        # Ray Data logs every dataset's start and progress at INFO: the stage has its own bar
        self._logger = logging.getLogger("ray.data")
        self._level = self._logger.level
        self._logger.setLevel(logging.WARNING)

    def describe(self) -> str:
        where = self.config.address or "local mode"
        return f"ray ({where}, {self.workers} workers)"

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[R]:
        import pickle

        import ray
        import ray.data

        if not items:
            return
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        rows = [{"index": i, "item": pickle.dumps(item)} for i, item in enumerate(items)]
        ds = ray.data.from_items(rows, override_num_blocks=len(rows))
        ds = ds.map(_call, fn_args=(fn,), num_cpus=self.config.cpus_per_task,
                    compute=ray.data.TaskPoolStrategy(size=min(self.workers, len(rows))))
        expected = 0
        for row in ds.iter_rows():
            if row["index"] != expected:
                raise LmforgeError(f"ray executor: result {row['index']} arrived where "
                                   f"{expected} was due")
            expected += 1
            if row["error"]:
                raise pickle.loads(row["error"])
            yield pickle.loads(row["result"])
        if expected != len(items):
            raise LmforgeError(f"ray executor: {expected} of {len(items)} results came back")

    def close(self) -> None:
        if hasattr(self, "_logger"):
            self._logger.setLevel(self._level)
        if self._started:
            import ray

            ray.shutdown()
            self._started = False

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def factory(config: Any) -> RayExecutor:
    return RayExecutor(config)
