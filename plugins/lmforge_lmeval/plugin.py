"""Registration of the ``lmeval`` plugin (light: imports neither torch nor lm_eval)."""

from __future__ import annotations

from collections.abc import Sequence

from lmforge import Component, hookimpl
from lmforge_lmeval.config import LmEvalConfig


@hookimpl
def lmforge_components() -> Sequence[Component]:
    return [
        Component(kind="evaluator", name="lm-eval", config=LmEvalConfig,
                  factory="lmforge_lmeval.evaluator:LmEval",
                  description="lm-evaluation-harness tasks from local YAML and data files, "
                              "in-process (needs lmforge[lm-eval])"),
    ]
