"""The sandbox protocol: what a component of kind ``sandbox`` implements (public API).

Rewards and evaluators that execute model-written code (``python-checks``, ``pass-at-k``) never
run it in their own process: they build a sandbox with ``stage.build("sandbox", config)`` —
``factory(config)`` — and call

* ``run_python(source, *, stdin=None, files=None, timeout_s=None) -> SandboxResult`` — run
  ``source`` as a Python program in a fresh, empty working directory holding ``files``
  (relative path -> text), with ``stdin`` as its standard input; ``timeout_s`` (default: the
  sandbox's configured limit) bounds the wall time. It returns when the program and every
  process it started have ended or been killed;
* ``close() -> None`` — end anything still running.

A sandbox documents its limits (time, memory, processes, output size, network, file system) and
what it does *not* protect against; ``SandboxResult.limit`` says which limit ended a run.
Calls may come from several threads at once; a sandbox may bound how many run at once and say
so with an optional ``workers`` attribute, which :func:`run_many` uses as its pool size.
Nothing here imports torch.

To grade code against doctests, see :mod:`lmforge.codecheck` (the program to run and how to
read its report).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

__all__ = ["Sandbox", "SandboxJob", "SandboxResult", "run_many"]


@dataclass(frozen=True)
class SandboxResult:
    """How a sandboxed run ended.

    ``returncode``: the exit status (negative: killed by that signal; ``None``: it could not be
    started); ``stdout``/``stderr``: decoded text, cut at the sandbox's output limit;
    ``limit``: ``"time"``, ``"memory"``, ``"processes"``, ``"output"`` or ``None`` — the limit
    that ended the run, if one did; ``wall_s``: seconds from start to end.
    """

    returncode: int | None
    stdout: str
    stderr: str
    limit: str | None
    wall_s: float

    @property
    def ok(self) -> bool:
        """The program exited 0 within every limit."""
        return self.returncode == 0 and self.limit is None


@runtime_checkable
class Sandbox(Protocol):
    def run_python(self, source: str, *, stdin: str | None = None,
                   files: Mapping[str, str] | None = None,
                   timeout_s: float | None = None) -> SandboxResult: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class SandboxJob:
    """One program for :func:`run_many`: the arguments of :meth:`Sandbox.run_python`."""

    source: str
    stdin: str | None = None
    files: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float | None = None


def run_many(sandbox: Sandbox, jobs: Sequence[SandboxJob],
             workers: int | None = None) -> list[SandboxResult]:
    """Run ``jobs`` concurrently on a thread pool (``workers``, default the sandbox's own
    ``workers`` attribute, else 4) and return their results in order."""
    from concurrent.futures import ThreadPoolExecutor

    if not jobs:
        return []
    n = max(1, min(len(jobs), workers or int(getattr(sandbox, "workers", 4) or 4)))

    def one(job: SandboxJob) -> SandboxResult:
        return sandbox.run_python(job.source, stdin=job.stdin, files=job.files or None,
                                  timeout_s=job.timeout_s)

    if n == 1:
        return [one(job) for job in jobs]
    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="sandbox") as pool:
        return list(pool.map(one, jobs))
