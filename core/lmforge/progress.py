"""Console progress for long work: a rich progress bar on a terminal, periodic lines elsewhere."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class TaskHandle:
    """Returned by :meth:`Progress.task`; ``advance(n, **fields)`` moves the bar."""

    def __init__(self, owner: Progress, task_id: Any, total: int | None, description: str,
                 unit: str) -> None:
        self._owner, self._id, self.total, self.description, self.unit = (
            owner, task_id, total, description, unit)
        self.completed = 0
        self.fields: dict[str, Any] = {}
        self._start = time.monotonic()
        self._last_line = self._start  # lines are timed from the start (see Progress.task)
        self._last_text = ""  # what the last line said (a final line repeating it is skipped)

    def advance(self, n: int = 1, **fields: Any) -> None:
        self.completed += n
        self.fields.update(fields)
        self._owner._update(self)

    def set(self, completed: int, **fields: Any) -> None:
        self.completed = completed
        self.fields.update(fields)
        self._owner._update(self)

    def elapsed(self) -> float:
        return time.monotonic() - self._start

    def describe_fields(self) -> str:
        parts = []
        for k, v in self.fields.items():
            parts.append(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}")
        return " ".join(parts)


class Progress:
    """One per run. ``enabled=False`` (``--quiet``) draws nothing."""

    def __init__(self, enabled: bool = True, line_interval: float = 10.0,
                 first_line_after: float = 2.0) -> None:
        self.enabled = enabled
        self.interactive = enabled and sys.stderr.isatty()
        self.line_interval = line_interval
        self.first_line_after = min(first_line_after, line_interval)
        self._rich: Any = None

    @contextmanager
    def task(self, total: int | None, description: str, unit: str = "it") -> Iterator[TaskHandle]:
        """A progress task. On a terminal: a rich bar. Elsewhere: a first line once it has
        run ``first_line_after`` seconds, then at most one every ``line_interval`` seconds, and
        a final line when it ends unless the last line already said the same (a task shorter
        than ``first_line_after`` prints exactly one line).

        ``description`` segments separated by ``": "`` that repeat the previous one are
        dropped (``"eval: perplexity: perplexity"`` shows as ``"eval: perplexity"``): callers
        nest prefixes (stage id, evaluator) without knowing what the inner label says.
        """
        description = collapse_label(description)
        if self.interactive:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                               TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                               TextColumn("eta"), TimeRemainingColumn(), transient=False)
            bar.start()
            tid = bar.add_task(description, total=total, info="")
            self._rich = bar
            handle = TaskHandle(self, tid, total, description, unit)
            try:
                yield handle
            finally:
                bar.stop()
                self._rich = None
        else:
            handle = TaskHandle(self, None, total, description, unit)
            try:
                yield handle
            finally:
                if self.enabled and handle.completed:
                    self._line(handle, final=True)

    def _update(self, h: TaskHandle) -> None:
        if not self.enabled:
            return
        if self._rich is not None:
            self._rich.update(h._id, completed=h.completed, info=h.describe_fields())
            return
        now = time.monotonic()
        due = self.line_interval if h._last_text else self.first_line_after
        if now - h._last_line >= due:
            h._last_line = now
            self._line(h)

    def _line(self, h: TaskHandle, final: bool = False) -> None:
        total = f"/{h.total}" if h.total else ""
        fields = h.describe_fields()
        text = f"{h.description}: {h.completed}{total} {h.unit}" + (f" {fields}" if fields else "")
        if final and text == h._last_text:
            return  # the last periodic line already said this
        h._last_text = text
        el = h.elapsed()
        eta = ""
        if h.total and h.completed and not final:
            eta = f" eta {max(0.0, el / h.completed * (h.total - h.completed)):.0f}s"
        sys.stderr.write(f"{text} [{el:.0f}s{eta}]\n")
        sys.stderr.flush()


def collapse_label(label: str) -> str:
    """``label`` without ``": "``-separated segments that repeat the one before."""
    parts: list[str] = []
    for part in label.split(": "):
        if not parts or part.strip() != parts[-1].strip():
            parts.append(part)
    return ": ".join(parts)
