"""The ``python-functions`` source: mine Python files with ``ast`` (see ``PythonFunctionsConfig``).

Files are walked in sorted order and every choice is seeded from ``seed`` and the function's
file and qualified name, so two runs give the same records. A function is used when it is a
module-level function or a method (classes nest), has a docstring whose summary (first
paragraph, one line) has at least ``min_doc_chars`` characters, is public (unless
``include_private``; dunders never), has a body beyond the docstring that is not just
``pass`` / ``...`` / ``raise NotImplementedError``, and is at most ``max_function_chars`` long
once the docstring is removed.
"""

from __future__ import annotations

import ast
import random
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmforge.curation import Partition
from lmforge_data.paths import as_list, expand, glob_base, group_files, substitute
from lmforge_data.records import GROUP_KEY, WHERE_KEY
from lmforge_data.sources.corrupt import corrupt

# A multiple-choice question has the answer and this many wrong names, all from one file.
MC_DISTRACTORS = 3


@dataclass(frozen=True)
class MinedFunction:
    """One usable function: ``code`` is its source (decorators kept, docstring removed,
    dedented to column 0)."""

    path: str
    lineno: int
    name: str
    qualname: str
    cls: str | None
    signature: str
    summary: str
    code: str

    @property
    def where(self) -> str:
        return f"{self.path}:{self.lineno} {self.qualname}"

    def instruction(self) -> str:
        what = (f"method `{self.signature}` of class `{self.cls}`" if self.cls
                else f"function `{self.signature}`")
        return f"Write a Python {what} that: {self.summary}"


def docstring_summary(doc: str) -> str:
    """The first paragraph of a cleaned docstring, on one line."""
    first = re.split(r"\n\s*\n", doc.strip(), maxsplit=1)[0]
    return " ".join(first.split())


def _trivial(body: list[ast.stmt]) -> bool:
    if len(body) != 1:
        return False
    stmt = body[0]
    if isinstance(stmt, ast.Pass):
        return True
    if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
        return True
    if isinstance(stmt, ast.Raise) and stmt.exc is not None:
        exc = stmt.exc.func if isinstance(stmt.exc, ast.Call) else stmt.exc
        return isinstance(exc, ast.Name) and exc.id == "NotImplementedError"
    return False


def functions_in(source: str, path: str, *, min_doc_chars: int = 20,
                 max_function_chars: int = 3000, include_private: bool = False
                 ) -> Iterator[MinedFunction]:
    """The usable functions of one file's source, in source order (raises ``SyntaxError``)."""
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)

    def visit(body: list[ast.stmt], cls: str | None, prefix: str) -> Iterator[MinedFunction]:
        for node in body:
            if isinstance(node, ast.ClassDef):
                yield from visit(node.body, node.name, f"{prefix}{node.name}.")
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                fn = _mine(node, lines, path, cls, prefix, min_doc_chars, max_function_chars,
                           include_private)
                if fn is not None:
                    yield fn

    yield from visit(tree.body, None, "")


def _mine(node: ast.FunctionDef | ast.AsyncFunctionDef, lines: list[str], path: str,
          cls: str | None, prefix: str, min_doc_chars: int, max_function_chars: int,
          include_private: bool) -> MinedFunction | None:
    name = node.name
    if name.startswith("__") and name.endswith("__"):
        return None
    if name.startswith("_") and not include_private:
        return None
    doc = ast.get_docstring(node, clean=True)
    if not doc:
        return None
    summary = docstring_summary(doc)
    if len(summary) < max(1, min_doc_chars):
        return None
    ds = node.body[0]
    rest = node.body[1:]
    if not rest or _trivial(rest) or ds.lineno == node.lineno or rest[0].lineno <= ds.end_lineno:
        return None  # nothing to learn, or docstring shares a line with code
    start = min([node.lineno] + [d.lineno for d in node.decorator_list])
    end = node.end_lineno or node.lineno
    first = lines[start - 1]
    indent = first[:len(first) - len(first.lstrip())]
    after = lines[ds.end_lineno:end]
    while after and not after[0].strip():
        after = after[1:]  # the blank line that usually follows a docstring
    kept = lines[start - 1:ds.lineno - 1] + after
    code = "".join(ln[len(indent):] if ln.startswith(indent) else ln for ln in kept).rstrip()
    if len(code) > max_function_chars:
        return None
    ret = f" -> {ast.unparse(node.returns)}" if node.returns is not None else ""
    signature = f"{name}({ast.unparse(node.args)}){ret}"
    return MinedFunction(path=path, lineno=node.lineno, name=name, qualname=prefix + name,
                         cls=cls, signature=signature, summary=summary, code=code + "\n")


class PythonFunctionsSource:
    def __init__(self, config: Any) -> None:
        self.config = config
        self.skipped: Counter[str] = Counter()
        self._files: list[Path] | None = None

    def describe(self) -> str:
        paths = as_list(self.config.path)
        return f"python-functions:{paths[0] if len(paths) == 1 else paths}"

    def files(self) -> list[Path]:
        if self._files is None:
            self._files = expand(self.config.path, self.config.exclude)
        return self._files

    def check(self) -> None:
        self.files()

    def unit(self, path: Path) -> str:
        """The file as a path relative to its glob's fixed folder (the split unit)."""
        for pattern in as_list(self.config.path):
            base = Path(glob_base(substitute(pattern)))
            try:
                return str(Path(path).relative_to(base))
            except ValueError:
                continue
        return str(path)

    def _rng(self, *parts: object) -> random.Random:
        return random.Random(":".join(map(str, (self.config.seed, *parts))))

    # -- partitions (lmforge.curation.PartitionedSource) -----------------------------------
    def partitions(self, target_bytes: int) -> list[Partition]:
        """Consecutive files grouped up to about ``target_bytes``: every record depends on one
        file only (its seeded choices included), so partitions read alone give the same
        records."""
        return group_files(self.files(), target_bytes)

    def read(self, partition: Partition) -> Iterator[dict[str, Any]]:
        return self._records([Path(p) for p in partition.data])

    def _sources(self, files: list[Path]) -> Iterator[tuple[Path, str]]:
        for path in files:
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                self.skipped["undecodable"] += 1
                continue
            except OSError:
                self.skipped["unreadable"] += 1
                continue
            yield path, text

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self._records(self.files())

    def _records(self, files: list[Path]) -> Iterator[dict[str, Any]]:
        c = self.config
        if c.mode == "text":
            for path, text in self._sources(files):
                if len(text.strip()) < c.min_file_chars:
                    self.skipped["short_file"] += 1
                    continue
                yield {"text": text, WHERE_KEY: str(path), GROUP_KEY: self.unit(path)}
            return
        if c.mode == "prompt":
            yield from self._problems(files)
            return
        yield from (self._multiple_choice(files) if c.mode == "multiple-choice"
                    else self._per_function(files))

    def _problems(self, files: list[Path]) -> Iterator[dict[str, Any]]:
        """'prompt' mode: coding problems (see :mod:`lmforge_data.sources.problems`)."""
        from lmforge_data.sources.problems import problems_in, verified

        c = self.config
        for path, text in self._sources(files):
            try:
                found = list(problems_in(text, str(path), max_function_chars=c.max_function_chars,
                                         include_private=c.include_private))
            except (SyntaxError, ValueError):
                self.skipped["syntax_error"] += 1
                continue
            for problem, ok in verified(found, timeout_s=c.problem_timeout_s):
                if not ok:
                    self.skipped["reference_fails_its_doctests"] += 1
                    continue
                yield {"prompt": problem.prompt(), "reference": problem.reference,
                       "tests": problem.tests, "entry_point": problem.name,
                       WHERE_KEY: problem.where, GROUP_KEY: self.unit(path)}

    def _functions(self, files: list[Path]) -> Iterator[MinedFunction]:
        c = self.config
        for path, text in self._sources(files):
            try:
                yield from functions_in(text, str(path), min_doc_chars=c.min_doc_chars,
                                        max_function_chars=c.max_function_chars,
                                        include_private=c.include_private)
            except (SyntaxError, ValueError):  # ValueError: null bytes
                self.skipped["syntax_error"] += 1

    def _per_function(self, files: list[Path]) -> Iterator[dict[str, Any]]:
        for fn in self._functions(files):
            user = {"role": "user", "content": fn.instruction()}
            if self.config.mode == "chat":
                yield {"messages": [user, {"role": "assistant", "content": fn.code}],
                       WHERE_KEY: fn.where, GROUP_KEY: self.unit(Path(fn.path))}
                continue
            bad = corrupt(fn.code, self._rng("corrupt", fn.path, fn.qualname, fn.lineno),
                          tuple(self.config.corruptions))
            if bad is None:
                self.skipped["no_corruption"] += 1
                continue
            yield {"prompt": [user], "chosen": fn.code, "rejected": bad[0], WHERE_KEY: fn.where,
                   GROUP_KEY: self.unit(Path(fn.path))}

    def _multiple_choice(self, files: list[Path]) -> Iterator[dict[str, Any]]:
        """One question per function; its wrong choices are other functions of the same file.

        The answer and the distractors are then equally familiar to any model: they lie in the
        same split (``split_by: source`` holds out whole files), and since every function of a
        file is asked about, each name is the answer as often as any other. A model that ignores
        the question scores at chance in expectation. (Distractors drawn from the whole corpus
        were mostly names of training files, which a trained model prefers, so every model
        scored below chance.) Files with fewer than four distinct names give no question."""
        file_fns: list[MinedFunction] = []
        for fn in self._functions(files):
            if file_fns and fn.path != file_fns[0].path:
                yield from self._file_questions(file_fns)
                file_fns = []
            file_fns.append(fn)
        yield from self._file_questions(file_fns)

    def _file_questions(self, fns: list[MinedFunction]) -> Iterator[dict[str, Any]]:
        names = list(dict.fromkeys(fn.name for fn in fns))  # distinct, in source order
        if len(names) < MC_DISTRACTORS + 1:
            self.skipped["too_few_names_in_file"] += len(fns)
            return
        for fn in fns:
            yield self._question(fn, [n for n in names if n != fn.name])

    def _question(self, fn: MinedFunction, others: list[str]) -> dict[str, Any]:
        rng = self._rng("choices", fn.path, fn.qualname, fn.lineno)
        distractors = rng.sample(others, MC_DISTRACTORS)
        answer = rng.randrange(MC_DISTRACTORS + 1)
        choices = distractors[:answer] + [fn.name] + distractors[answer:]
        return {"question": f"Which Python function does this: {fn.summary}",
                "choices": choices, "answer": answer, WHERE_KEY: fn.where,
                GROUP_KEY: self.unit(Path(fn.path))}


def python_functions(config: Any) -> PythonFunctionsSource:
    return PythonFunctionsSource(config)
