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
Calls may come from several threads at once. Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["Sandbox", "SandboxResult"]


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
