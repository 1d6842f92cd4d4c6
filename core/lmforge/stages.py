"""The stage contract: what a stage plugin implements and what the runner gives it.

A stage component's factory is called as ``factory(config, ctx)`` and returns a :class:`Stage`.
The runner then calls :meth:`Stage.check` (cheap validation of inputs, before any heavy work)
and :meth:`Stage.run`. A stage:

* reads its inputs from ``ctx.inputs[name]`` (:class:`Artifact`: kind, path, hash, meta),
  and an input that takes several artifacts with ``ctx.input_list(name)``;
* writes each declared output under ``ctx.output_dir(name)`` — the runner hashes that folder and
  records it in the manifest only after ``run`` returns, so a partial output is never complete;
* logs metrics with ``ctx.log(step, {...})`` and long work with ``ctx.progress(...)``;
* checkpoints through ``ctx.checkpoints`` and, when re-run after an interruption, resumes from
  ``ctx.checkpoints.latest_valid()`` (``ctx.resumed`` tells it that a previous attempt exists;
  a checkpoint whose files no longer match their hashes is reported and skipped);
* returns a mapping of headline metrics for the manifest and the summary table.

Errors the user can fix (a missing file, a bad record) are raised as :class:`StageInputError`
with the file and record named; the runner reports them without a traceback.

In a multi-process run (torchrun, ``lmforge run --nproc N``) a stage component declares which
ranks run it (:attr:`lmforge.Component.ranks`). On every rank ``ctx.rank``, ``ctx.world_size``
and ``ctx.is_main`` say where it runs; ``ctx.log``, ``ctx.write_artifact_meta`` and the
checkpoint hooks act on the main rank only, so a stage never checks the rank to avoid writing
a file twice.
"""

from __future__ import annotations

import abc
import json
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmforge.errors import StageInputError

if TYPE_CHECKING:
    from lmforge.checkpoint import CheckpointStore
    from lmforge.components import Component, Config
    from lmforge.plugins import PluginManager
    from lmforge.progress import Progress


#: The plugin manager of the StageContext.build call in progress (see building_plugins).
_BUILDING: ContextVar[Any] = ContextVar("lmforge_building_plugins", default=None)


def building_plugins() -> Any:
    """The :class:`lmforge.plugins.PluginManager` of the :meth:`StageContext.build` call in
    progress, or None outside one. A component whose config holds other components' configs
    (the ``composite`` reward) builds them from its factory with it:
    ``building_plugins().get_component(kind, cfg.type).load_factory()(cfg)``."""
    return _BUILDING.get()


@dataclass(frozen=True)
class Artifact:
    """A finished output of a stage, as recorded in its manifest.

    ``path`` is absolute; ``hash`` is the content hash of the folder (sha256 over relative paths
    and file contents); ``meta`` is what the producing stage stored in ``artifact.json`` inside
    the folder (e.g. a dataset's format and row counts, a model's architecture config).
    """

    kind: str
    path: Path
    hash: str
    stage_id: str
    meta: Mapping[str, Any] = field(default_factory=dict)


class Stage(abc.ABC):
    """Base class for stage implementations (see the module docstring for the contract)."""

    def __init__(self, config: Config, ctx: StageContext) -> None:
        self.config = config
        self.ctx = ctx

    def check(self) -> None:  # noqa: B027 - optional hook
        """Validate inputs cheaply before heavy work; raise :class:`StageInputError` if unusable."""

    @abc.abstractmethod
    def run(self) -> Mapping[str, Any]:
        """Do the work, write the outputs, return headline metrics (name -> number or string)."""


class StageContext:
    """Everything a running stage may use from the core. Created by the runner per stage."""

    def __init__(
        self,
        *,
        stage_id: str,
        component: Component,
        stage_dir: Path,
        inputs: Mapping[str, Artifact],
        outputs: Mapping[str, str],
        plugins: PluginManager,
        seed: int,
        resumed: bool,
        progress: Progress,
        checkpoints: CheckpointStore,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.stage_id = stage_id
        self.component = component
        self.stage_dir = stage_dir
        self.inputs = dict(inputs)
        self.output_kinds = dict(outputs)
        self.plugins = plugins
        self.seed = seed
        self.resumed = resumed
        self._progress = progress
        self.checkpoints = checkpoints
        self.rank = rank
        self.world_size = world_size
        self._metrics_path = stage_dir / "metrics.jsonl"
        self._last_metrics: dict[str, Any] = {}
        #: output name -> {relative path: (size, sha256)} hashed by the stage while writing
        self.recorded_files: dict[str, dict[str, tuple[int, str]]] = {}

    @property
    def is_main(self) -> bool:
        """Whether this is the main rank (rank 0), the one that writes shared files."""
        return self.rank == 0

    # -- outputs ---------------------------------------------------------------------------
    def output_dir(self, name: str) -> Path:
        """The folder for output ``name`` (created). Write artifact files here."""
        if name not in self.output_kinds:
            raise KeyError(f"stage {self.stage_id!r} declares no output {name!r}; "
                           f"declared: {sorted(self.output_kinds)}")
        path = self.stage_dir / "outputs" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def write_artifact_meta(self, name: str, meta: Mapping[str, Any]) -> None:
        """Store ``meta`` as the output's ``artifact.json`` (read back as ``Artifact.meta``);
        main rank only."""
        from lmforge.fsutil import atomic_write_text

        if not self.is_main:
            return
        atomic_write_text(self.output_dir(name) / "artifact.json",
                          json.dumps(meta, indent=2, sort_keys=True, default=str))

    def record_output_files(self, name: str, files: Mapping[str, tuple[int, str]]) -> None:
        """Tell the runner the ``(size, sha256)`` of files of output ``name`` (paths relative
        to :meth:`output_dir`) that the stage hashed as it wrote them, so the runner does not
        re-read them to build the manifest. A recorded file whose size on disk differs when
        the stage returns is hashed again; files not recorded are hashed by the runner."""
        if name not in self.output_kinds:
            raise KeyError(f"stage {self.stage_id!r} declares no output {name!r}")
        known = self.recorded_files.setdefault(name, {})
        for rel, (size, digest) in files.items():
            known[str(rel)] = (int(size), str(digest))

    def work_dir(self, name: str = "work") -> Path:
        """A scratch folder inside the stage directory that survives an interruption."""
        path = self.stage_dir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    # -- inputs ----------------------------------------------------------------------------
    def input(self, name: str) -> Artifact:
        try:
            return self.inputs[name]
        except KeyError:
            raise StageInputError(f"stage {self.stage_id!r} needs input {name!r} but none was "
                                  f"wired; add it under 'inputs:' in the spec") from None

    def input_list(self, name: str) -> list[Artifact]:
        """The artifacts of an input that takes several (``InputSlot(many=True)``), in the
        spec's order; each names its producing stage (``Artifact.stage_id``). Empty when an
        optional one is not wired."""
        from lmforge.components import split_input_key

        slots = self.component.inputs
        decl = None if callable(slots) else slots.get(name)  # config-dependent: trust the wiring
        if not callable(slots) and (decl is None or not decl.many):
            raise KeyError(f"stage plugin {self.component.name!r} has no input {name!r} that "
                           f"takes several artifacts")
        found = []
        for key, artifact in self.inputs.items():
            slot, index = split_input_key(key)
            if slot == name and index is not None:
                found.append((index, artifact))
        return [a for _, a in sorted(found, key=lambda pair: pair[0])]

    # -- components ------------------------------------------------------------------------
    def build(self, kind: str, config: Config, *args: Any, **kwargs: Any) -> Any:
        """Build the component of ``kind`` selected by ``config`` (its ``type`` field).

        Calls the component's factory as ``factory(config, *args, **kwargs)``.
        """
        name = getattr(config, "type", None)
        if name is None:
            raise TypeError(f"config for a {kind!r} component has no 'type' field: {config!r}")
        component = self.plugins.get_component(kind, name)
        token = _BUILDING.set(self.plugins)
        try:
            return component.load_factory()(config, *args, **kwargs)
        finally:
            _BUILDING.reset(token)

    def load_model(self, artifact: Artifact | Path, **kwargs: Any) -> Any:
        """Rebuild the model stored in a ``model`` artifact (see :mod:`lmforge.modelio`)."""
        from lmforge.modelio import load_model

        path = artifact.path if isinstance(artifact, Artifact) else artifact
        return load_model(path, self.plugins, **kwargs)

    # -- metrics and progress --------------------------------------------------------------
    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Record metrics at ``step``: appended to ``metrics.jsonl`` and sent to trackers (on
        the main rank; other ranks only keep :attr:`last_metrics`)."""
        clean = {k: (float(v) if isinstance(v, (int, float)) else v) for k, v in metrics.items()}
        if not self.is_main:
            self._last_metrics.update(clean)
            return
        record = {"step": int(step), "time": time.time(), **clean}
        with self._metrics_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        self._last_metrics.update(clean)
        self.plugins.call_lifecycle("lmforge_metrics", stage_id=self.stage_id, step=int(step),
                                    metrics=clean)

    def truncate_metrics(self, after_step: int, records: int | None = None) -> None:
        """Drop metrics records with ``step > after_step`` (used when resuming a checkpoint);
        with ``records`` (what :meth:`metrics_records` said when the checkpoint was taken),
        also every record logged after that, at any step."""
        if not self.is_main or not self._metrics_path.exists():
            return
        from lmforge.fsutil import atomic_write_text

        kept = []
        for line in self._metrics_path.read_text(encoding="utf-8", errors="replace").splitlines():
            if records is not None and len(kept) >= records:
                break
            try:  # a line cut short when the process was killed mid-write is dropped
                if int(json.loads(line)["step"]) <= after_step:
                    kept.append(line)
            except (ValueError, KeyError, TypeError):
                continue
        atomic_write_text(self._metrics_path, "".join(line + "\n" for line in kept))

    def metrics_records(self) -> int:
        """How many metrics records the stage has logged so far (main rank; 0 elsewhere)."""
        if not self.is_main or not self._metrics_path.exists():
            return 0
        with self._metrics_path.open("rb") as fh:
            return sum(1 for line in fh if line.strip())

    @property
    def last_metrics(self) -> dict[str, Any]:
        return dict(self._last_metrics)

    @contextmanager
    def progress(self, total: int | None, description: str, unit: str = "it") -> Iterator[Any]:
        """A progress bar for long work; the handle has ``advance(n=1, **fields)``.

        Fields (e.g. ``loss=2.31``) are shown next to the bar. Rendered only on a terminal;
        elsewhere it prints a line now and then.
        """
        with self._progress.task(total=total, description=f"{self.stage_id}: {description}",
                                 unit=unit) as handle:
            yield handle

    def checkpoint_saved(self, step: int, path: Path) -> None:
        if not self.is_main:
            return
        self.plugins.call_lifecycle("lmforge_checkpoint_saved", stage_id=self.stage_id, step=step,
                                    path=path)
