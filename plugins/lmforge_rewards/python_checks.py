"""The ``python-checks`` reward: partial credit for a Python function.

Per sample (the code is the completion's fenced block defining ``entry_point``, else its first
fenced block, else the whole completion — :func:`lmforge.codecheck.extract_code`):

* ``parse_weight`` (0.2) if the code parses (``ast``); code that does not parse scores 0;
* ``names_weight`` (0.2) if every name it reads is bound (:mod:`lmforge_rewards.names`: its own
  definitions, imports, builtins), every import is a standard-library module, and it defines
  the row's ``entry_point`` (``require_entry_point``);
* ``doctest_weight`` (0.6) times the fraction of doctest examples that pass, run in the
  sandbox against the code: the row's ``tests`` when it has them, else the doctests in the
  code's own docstrings (code without any gets 0 for this part: absence earns nothing).

The default weights sum to 1: a correct function scores 1.0, one that runs but fails half its
examples 0.7, one with a typo in a name 0.2 + 0.6 * (what still passes), broken syntax 0.
"""

from __future__ import annotations

import ast
import doctest
from collections.abc import Sequence
from typing import Any

from lmforge.codecheck import doctest_program, extract_code, new_nonce, parse_report, parses
from lmforge.rewards import Reward, RewardOutput, RewardSample
from lmforge.sandbox import SandboxJob, run_many
from lmforge_rewards.names import defines, undefined_names, unresolved_imports


def own_doctests(tree: ast.Module) -> str:
    """The doctest examples in the docstrings of the module and its functions and classes."""
    parts = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            doc = ast.get_docstring(node, clean=True)
            if doc and ">>>" in doc:
                parts.append(doc)
    return "\n\n".join(parts)


def count_examples(tests: str) -> int:
    try:
        return len(doctest.DocTestParser().get_examples(tests))
    except ValueError:
        return 0


class PythonChecks(Reward):
    """Config: :class:`lmforge_rewards.config.PythonChecksConfig`."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.sandbox: Any = None

    def setup(self, stage: Any, device: Any) -> None:
        if self.sandbox is None:
            self.sandbox = stage.build("sandbox", self.config.sandbox)

    def use_sandbox(self, sandbox: Any) -> None:
        """Run doctests in ``sandbox`` (instead of building one in :meth:`setup`)."""
        self.sandbox = sandbox

    def score(self, samples: Sequence[RewardSample]) -> RewardOutput:
        if self.sandbox is None:
            raise RuntimeError("python-checks: setup() was not called (it builds the sandbox)")
        c = self.config
        scores: list[float] = []
        details: list[dict[str, Any]] = []
        jobs: list[SandboxJob] = []
        pending: list[tuple[int, str]] = []  # (sample index, nonce)
        for i, sample in enumerate(samples):
            entry = sample.meta.get("entry_point") if sample.meta else None
            code = extract_code(sample.completion, entry)
            tree = parses(code)
            detail: dict[str, Any] = {"parses": tree is not None}
            if tree is None:
                scores.append(0.0)
                details.append({**detail, "names_resolve": False, "doctests": None})
                continue
            undefined = undefined_names(code, tree)
            imports = unresolved_imports(tree)
            has_entry = not (c.require_entry_point and entry) or defines(tree, str(entry))
            names_ok = not undefined and not imports and has_entry
            detail.update(names_resolve=names_ok, undefined=undefined[:10],
                          unknown_imports=imports[:10], defines_entry_point=has_entry)
            tests = sample.tests if sample.tests else own_doctests(tree)
            score = c.parse_weight + (c.names_weight if names_ok else 0.0)
            if tests and count_examples(tests):
                nonce = new_nonce()
                jobs.append(SandboxJob(doctest_program(code, tests, str(entry or "tests")),
                                       stdin=nonce + "\n", timeout_s=c.timeout_s))
                pending.append((i, nonce))
            else:
                detail["doctests"] = None
            scores.append(score)
            details.append(detail)
        for (i, nonce), result in zip(pending, run_many(self.sandbox, jobs)):
            report = parse_report(result.stdout, nonce)
            frac = report.fraction if report is not None else 0.0
            scores[i] += c.doctest_weight * frac
            details[i]["doctests"] = {
                "attempted": report.attempted if report else 0,
                "passed": report.passed if report else 0,
                "limit": result.limit,
                "error": (report.error if report else (result.stderr[-300:] or "no report")),
            }
        return RewardOutput([float(s) for s in scores], details)

    def close(self) -> None:
        if self.sandbox is not None:
            self.sandbox.close()
