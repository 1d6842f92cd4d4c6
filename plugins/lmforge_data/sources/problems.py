"""Coding problems mined from Python files: functions whose docstrings hold doctests.

The ``python-functions`` source's ``prompt`` mode (the *problems* mode) turns every public
module-level function with ``>>>`` examples in its docstring (``doctest.DocTestParser``) that
call it by its bare name (``median(...)``: an example calling ``statistics.median`` would test
the library, not the completion) into a ``dataset/prompt`` row:

* ``prompt``: one user message asking for the function, given its signature and whole
  docstring (examples included), as a Python block to complete;
* ``tests``: the docstring — its doctest examples are the check (:mod:`lmforge.codecheck` runs
  them against a completion);
* ``entry_point``: the function's name;
* ``reference``: the real source (decorators and docstring included), after the module's
  top-level imports the function uses (shown in the prompt too, so the problem is
  self-contained: ``from collections import Counter`` above ``mode``).

A problem is kept only when its reference passes its own doctests when defined on its own —
run in a fresh ``python -I -S`` subprocess per problem with a time limit (the references are
the files' own code, not model output, so they are not sandboxed further). That drops functions
that need their module (helpers, constants, imports, examples written as ``module.func(...)``):
a completion could not pass those either.
"""

from __future__ import annotations

import ast
import doctest
import re
import subprocess
import sys
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from lmforge.codecheck import doctest_program, new_nonce, parse_report

INSTRUCTION = ("Write the Python function `{name}` below: keep its signature and make its "
               "docstring's examples pass. It must be self-contained (import what it uses). "
               "Reply with the complete function in one ```python block.\n\n"
               "```python\n{stub}\n```")


@dataclass(frozen=True)
class Problem:
    path: str
    lineno: int
    name: str
    stub: str  # signature + docstring + "..."
    tests: str  # the docstring
    reference: str

    @property
    def where(self) -> str:
        return f"{self.path}:{self.lineno} {self.name}"

    def prompt(self) -> list[dict[str, str]]:
        return [{"role": "user", "content": INSTRUCTION.format(name=self.name, stub=self.stub)}]


def _calls_itself(doc: str, name: str) -> bool:
    """Whether an example calls ``name`` by its bare name (``median(...)``, not
    ``statistics.median(...)``, which would test the library instead of the completion)."""
    try:
        examples = doctest.DocTestParser().get_examples(doc)
    except ValueError:  # malformed examples
        return False
    call = re.compile(rf"(?<![\w.]){re.escape(name)}\s*\(")
    return any(call.search(e.source) for e in examples)


def _imports_used(tree: ast.Module, fn: ast.AST) -> list[str]:
    """The module's top-level import statements that bind a name ``fn`` reads, as source."""
    used = {n.id for n in ast.walk(fn) if isinstance(n, ast.Name)}
    out = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            names = [a for a in node.names if (a.asname or a.name.split(".")[0]) in used]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [a for a in node.names if a.name != "*" and (a.asname or a.name) in used]
        else:
            continue
        if names:
            kept = type(node)(names=names, **({"module": node.module, "level": 0}
                                             if isinstance(node, ast.ImportFrom) else {}))
            out.append(ast.unparse(kept))
    return out


def problems_in(source: str, path: str, *, max_function_chars: int = 3000,
                include_private: bool = False) -> Iterator[Problem]:
    """Module-level functions of ``source`` with doctest examples (raises ``SyntaxError``)."""
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    for node in tree.body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if node.name.startswith("_") and not include_private:
            continue
        doc = ast.get_docstring(node, clean=False)
        if not doc or ">>>" not in doc or not _calls_itself(doc, node.name):
            continue
        start = min([node.lineno] + [d.lineno for d in node.decorator_list])
        reference = "".join(lines[start - 1:node.end_lineno]).rstrip() + "\n"
        if len(reference) > max_function_chars or reference[:1].isspace():
            continue
        body = node.body[0]
        stub = "".join(lines[start - 1:body.end_lineno]).rstrip() + "\n    ...\n"
        prelude = "".join(line + "\n" for line in _imports_used(tree, node))
        if prelude:
            prelude += "\n\n"
        yield Problem(path=path, lineno=node.lineno, name=node.name,
                      stub=(prelude + stub).rstrip("\n"),
                      tests=ast.get_docstring(node, clean=True) or doc,
                      reference=prelude + reference)


def reference_passes(problem: Problem, timeout_s: float = 10.0) -> bool:
    """Whether the reference, defined alone, passes every doctest example of its docstring."""
    nonce = new_nonce()
    program = doctest_program(problem.reference, problem.tests, problem.name)
    try:
        done = subprocess.run([sys.executable, "-I", "-S", "-c", program], input=nonce + "\n",
                              capture_output=True, text=True, timeout=timeout_s,
                              env={"PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "0"})
    except subprocess.TimeoutExpired:
        return False
    report = parse_report(done.stdout, nonce)
    return report is not None and report.ok


def verified(problems: Iterable[Problem], workers: int = 4, timeout_s: float = 10.0
             ) -> Iterator[tuple[Problem, bool]]:
    """``(problem, reference passes)`` for each problem, in order (checked concurrently)."""
    items = list(problems)
    if not items:
        return iter(())
    with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
        return iter(list(zip(items, pool.map(lambda p: reference_passes(p, timeout_s), items))))
