"""Checking model-written Python against doctests (public API; no torch, no subprocess).

Shared by everything that grades code — the ``python-checks`` reward, the ``pass-at-k``
evaluator, the data stage that mines problems (checking each reference) — so all of them count
passes the same way. Nothing here runs code: :func:`doctest_program` writes the program a
:mod:`lmforge.sandbox` runs, and :func:`parse_report` reads what it printed.

The program reads a one-line nonce from its standard input *before* the solution runs, and
prints its report as the last stdout line ``@@lmforge-doctest <nonce> {"attempted": n,
"failed": f, ...}``; it exits 0 only when every example passed. A solution that exits early,
crashes on import or prints a report of its own without the nonce gets no report (0 passed).
This stops naive forging, not a determined adversary: the solution runs in the same
interpreter as the harness (as in HumanEval) and could patch ``doctest`` itself.
"""

from __future__ import annotations

import ast
import json
import re
import secrets
from dataclasses import dataclass
from typing import Any

__all__ = ["DoctestReport", "doctest_program", "extract_code", "new_nonce", "parse_report"]

MARKER = "@@lmforge-doctest"

_HARNESS = '''\
import sys as _sys
_nonce = _sys.stdin.readline().strip()


def _lmforge_report(_solution, _tests, _name):
    import doctest
    import io
    import json
    import os

    report = {"attempted": 0, "failed": 0, "error": None, "failures": []}
    parser = doctest.DocTestParser()
    examples = parser.get_examples(_tests, _name)
    report["examples"] = len(examples)
    module = type(_sys)("__main__")
    module.__file__ = "solution.py"
    _sys.modules["__main__"] = module
    try:
        exec(compile(_solution, "solution.py", "exec"), module.__dict__)
    except BaseException as exc:  # the solution itself failed: every example fails
        report.update(attempted=len(examples), failed=len(examples),
                      error=f"{type(exc).__name__}: {exc}"[:500])
    else:
        test = parser.get_doctest(_tests, module.__dict__, _name, "tests", 0)
        buf = io.StringIO()
        runner = doctest.DocTestRunner(verbose=False, optionflags=0)
        try:
            result = runner.run(test, out=buf.write, clear_globs=False)
            report.update(attempted=result.attempted, failed=result.failed)
        except BaseException as exc:
            report.update(attempted=len(examples), failed=len(examples),
                          error=f"{type(exc).__name__}: {exc}"[:500])
        report["failures"] = [buf.getvalue()[:1500]] if report["failed"] else []
    line = "\\n" + " ".join([MARKER, _nonce, json.dumps(report)]) + "\\n"
    os.write(1, line.encode())
    os._exit(0 if report["attempted"] and not report["failed"] else 1)


MARKER = %(marker)r
_lmforge_report(%(solution)r, %(tests)r, %(name)r)
'''


@dataclass(frozen=True)
class DoctestReport:
    """``attempted`` examples run, ``failed`` of them failed; ``error``: why the solution
    failed as a whole (it raised on definition); ``failures``: doctest's failure text (cut)."""

    attempted: int
    failed: int
    error: str | None = None
    failures: tuple[str, ...] = ()

    @property
    def passed(self) -> int:
        return self.attempted - self.failed

    @property
    def fraction(self) -> float:
        """Share of examples that passed (0 when none ran)."""
        return self.passed / self.attempted if self.attempted else 0.0

    @property
    def ok(self) -> bool:
        return self.attempted > 0 and self.failed == 0


def new_nonce() -> str:
    return secrets.token_hex(16)


def doctest_program(solution: str, tests: str, name: str = "tests") -> str:
    """A program that defines ``solution`` in a fresh ``__main__`` module, runs the doctest
    examples in ``tests`` (text holding ``>>>`` examples, e.g. a docstring) against it and
    prints a report for :func:`parse_report`. Feed it the nonce as its stdin's first line."""
    return _HARNESS % {"marker": MARKER, "solution": solution, "tests": tests, "name": name}


def parse_report(stdout: str, nonce: str) -> DoctestReport | None:
    """The report the program printed with ``nonce``, or None (it never got that far)."""
    prefix = f"{MARKER} {nonce} "
    for line in reversed(stdout.splitlines()):
        if line.startswith(prefix):
            try:
                data: dict[str, Any] = json.loads(line[len(prefix):])
                return DoctestReport(int(data["attempted"]), int(data["failed"]),
                                     data.get("error"), tuple(data.get("failures") or ()))
            except (ValueError, KeyError, TypeError):
                return None
    return None


_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE)


def extract_code(completion: str, entry_point: str | None = None) -> str:
    """The Python code in a completion: the fenced block that defines ``entry_point`` (else
    the first fenced block) when the completion has Markdown fences, else the whole text."""
    blocks = [b.strip("\n") for b in _FENCE.findall(completion)]
    if not blocks:
        return completion.strip("\n")
    if entry_point:
        pattern = re.compile(rf"^\s*(?:async\s+)?def\s+{re.escape(entry_point)}\s*\(", re.M)
        for block in blocks:
            if pattern.search(block):
                return block
    return blocks[0]


def parses(code: str) -> ast.Module | None:
    """The module's syntax tree, or None if ``code`` is not valid Python."""
    try:
        return ast.parse(code)
    except (SyntaxError, ValueError):
        return None
