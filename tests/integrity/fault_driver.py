"""Run ``lmforge run ...`` and kill the process at the K-th event of one stage.

    python fault_driver.py STAGE K COUNTS_JSON -- run SPEC --run-dir DIR ...

An *event* is a point where a stage (or the runner, for it) makes progress or publishes a file:
a progress-bar advance (``TaskHandle.advance`` / ``set``: a chunk of documents curated, a batch
of the corpus read, a training step, a batch of windows evaluated) and every ``os.replace`` (an
atomic write -- manifest, artifact metadata, report, tokenizer --, a Parquet shard closed, model
weights or a checkpoint folder moved into place). Events are counted per stage, from the moment
the runner takes the stage up (before its ``running`` manifest is written) until it is done
(after its ``complete`` manifest is written). At the K-th event of STAGE, before it happens, the
process ends with ``os._exit(137)``, as a SIGKILL would end it: no ``finally``, no flush, no
manifest update. K=0 kills nothing. The counts per stage are written to COUNTS_JSON (when not
``-``) if the run ends by itself.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any


def main(argv: list[str]) -> int:
    stage, k, counts_path = argv[0], int(argv[1]), argv[2]
    assert argv[3] == "--", "usage: STAGE K COUNTS_JSON -- lmforge arguments"
    args = argv[4:]

    from lmforge import progress, runner

    current: list[str | None] = [None]
    counts: dict[str, int] = {}

    def event() -> None:
        s = current[0]
        if s is None:
            return
        counts[s] = counts.get(s, 0) + 1
        if s == stage and counts[s] == k:
            os._exit(137)

    def counted(fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*a: Any, **kw: Any) -> Any:
            event()
            return fn(*a, **kw)
        return wrapper

    progress.TaskHandle.advance = counted(progress.TaskHandle.advance)  # type: ignore[method-assign]
    progress.TaskHandle.set = counted(progress.TaskHandle.set)  # type: ignore[method-assign]
    os.replace = counted(os.replace)
    run_stage = runner.Runner._run_stage

    def tracked(self: Any, plan: Any, inputs: Any) -> Any:
        current[0] = plan.id
        try:
            return run_stage(self, plan, inputs)
        finally:
            current[0] = None

    runner.Runner._run_stage = tracked  # type: ignore[method-assign]

    from lmforge.cli import main as cli

    rc = cli(args)
    if counts_path != "-":
        with open(counts_path, "w", encoding="utf-8") as fh:
            json.dump(counts, fh)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
