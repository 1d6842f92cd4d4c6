"""Run ``lmforge ...`` and end the process with ``os._exit(137)`` (no cleanup, as SIGKILL) when
the K-th optimizer step of any model starts (``OptimStep.__call__``; K=0: never).

    python rl_kill_driver.py K -- -p rl_fakes run SPEC --run-dir DIR -q
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> int:
    k = int(argv[0])
    assert argv[1] == "--", "usage: K -- lmforge arguments"
    from lmforge.training import step

    calls = [0]
    original = step.OptimStep.__call__

    def counted(self, loss_fn, micro_batches):  # type: ignore[no-untyped-def]
        calls[0] += 1
        if calls[0] == k:
            os._exit(137)
        return original(self, loss_fn, micro_batches)

    step.OptimStep.__call__ = counted  # type: ignore[method-assign]
    from lmforge.cli import main as cli

    return cli(argv[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
