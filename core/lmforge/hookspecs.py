"""The hook specifications: the whole contract between lmforge and its plugins.

Every hook is called with keyword arguments only, and an implementation may accept any subset of
the arguments (pluggy passes only the ones it names). Implementations are marked with
``lmforge.hookimpl``. Plugins are modules (or objects) registered through the entry-point group
``lmforge.plugins``; tracker components are registered for the duration of one run.

There are two families:

* **contribution**: ``lmforge_components`` — what a plugin provides; ``lmforge_commands`` —
  subcommands it adds to the ``lmforge`` command line;
* **lifecycle**: ``lmforge_pipeline_start`` … ``lmforge_failure`` — what happens during a run.
  Trackers (console, wandb) are implementations of these. Lifecycle hooks must not raise: an
  exception from a tracker is reported and the run goes on (the runner catches and warns).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from lmforge.commands import Command
    from lmforge.components import Component

PROJECT = "lmforge"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def lmforge_components() -> Sequence[Component]:
    """Return the components this plugin contributes.

    Called once, right after plugins are loaded. Return a list of :class:`lmforge.Component`.
    This hook runs for every command (``validate``, ``plugins list`` ...), so the module that
    implements it must import nothing heavy: name the factory as a ``"module:attr"`` string.
    Not firstresult: results of all plugins are gathered. Two plugins contributing the same
    ``(kind, name)`` is an error naming both.
    """


@hookspec
def lmforge_commands() -> Sequence[Command]:
    """Return the ``lmforge`` subcommands this plugin adds (:class:`lmforge.commands.Command`).

    Called by the CLI only when the command line names no built-in command (or asks for the
    top-level help), so ``lmforge run`` never calls it. Return records only — name, help and a
    ``"module:attr"`` factory: the factory is imported when its command runs, so this hook
    imports nothing heavy. Not firstresult: every plugin's commands are gathered; a built-in
    name is ignored with a warning, a name two plugins add is an error naming both.
    """


@hookspec
def lmforge_pipeline_start(pipeline: Any, run_dir: Path, run_id: str) -> None:
    """Called once before the first stage runs (also when every stage is reused).

    ``pipeline`` is the validated spec (:class:`lmforge.spec.Pipeline`), ``run_dir`` the run's
    directory and ``run_id`` a stable id derived from it.
    """


@hookspec
def lmforge_stage_start(stage_id: str, kind: str, plugin: str, config: Mapping[str, Any],
                        stage_dir: Path, resumed: bool) -> None:
    """Called when a stage starts executing (not for reused stages).

    ``config`` is the stage's config as plain JSON-able data; ``resumed`` is true when the stage
    continues an interrupted attempt.
    """


@hookspec
def lmforge_metrics(stage_id: str, step: int, metrics: Mapping[str, float]) -> None:
    """Called each time a stage logs metrics (a training step, an evaluation result).

    ``step`` is the stage's own step counter (monotonic within a stage); ``metrics`` maps names
    such as ``"train/loss"`` to numbers. The same record is written to the stage's
    ``metrics.jsonl``.
    """


@hookspec
def lmforge_checkpoint_saved(stage_id: str, step: int, path: Path) -> None:
    """Called after a checkpoint has been written completely (atomically) at ``path``."""


@hookspec
def lmforge_stage_end(stage_id: str, status: str, manifest: Mapping[str, Any]) -> None:
    """Called when a stage finishes: ``status`` is ``"complete"``, ``"reused"`` or ``"failed"``.

    ``manifest`` is the stage's manifest as written to ``manifest.json``.
    """


@hookspec
def lmforge_failure(stage_id: str, error: BaseException) -> None:
    """Called when a stage fails (including on Ctrl-C), before ``lmforge_stage_end``."""


@hookspec
def lmforge_pipeline_end(run_dir: Path, status: str, summary: Mapping[str, Any]) -> None:
    """Called once at the end of a run: ``status`` is ``"complete"``, ``"failed"`` or
    ``"interrupted"``; ``summary`` maps stage ids to their status, seconds and headline metrics.
    Trackers flush and close here."""
