"""The pipeline runner: stage folders, manifests, content-addressed reuse, resume.

Every stage works in ``<run_dir>/<stage_id>/``:

* ``manifest.json`` — written atomically; ``status`` is ``running``, ``complete``, ``failed`` or
  ``interrupted``. Only a ``complete`` manifest makes the stage's outputs usable.
* ``outputs/<name>/`` — the artifacts; ``checkpoints/`` — resumable state; ``metrics.jsonl``.

A stage's **key** is a hash of its plugin (name, distribution, version), kind, config, the
pipeline seed and the content hashes of its input artifacts. A stage whose manifest is complete
with the same key, and whose output files still match the sizes and sha256 recorded in the
manifest when they were written, is reused; an output that changed on disk makes the stage run
again (and says why: an :class:`~lmforge.errors.IntegrityWarning` and the manifest's
``reason``). ``verify="size"`` (``lmforge run --verify size``) compares sizes only, for
artifacts too large to re-read on every run. Outputs of an earlier run that a stage takes as
inputs under ``--only`` are verified the same way. A stage whose previous attempt (same key)
did not complete is run again with ``ctx.resumed = True`` and its checkpoints kept (what the
attempt left in ``outputs/`` is deleted; without a committed checkpoint, its metrics too); with
a different key the folder is cleared first.

**Ranks** (:mod:`lmforge.dist`). Under ``torchrun`` or ``lmforge run --nproc N`` every rank runs
this same loop. The main rank alone decides run / reuse / resume and broadcasts the decision,
alone clears and creates stage folders, writes manifests and error logs, starts trackers and
calls lifecycle hooks. A stage whose component runs on ``"all"`` ranks is run by every rank; a
``"main"`` stage by rank 0 while the others wait for its outcome. Ranks meet at a barrier after
every stage. The run directory must be on a file system every rank sees.

**Lock.** The main rank holds an exclusive lock on ``<run_dir>/.lock`` for the whole run: a
second ``lmforge run`` on the same directory stops at once with a message naming the holder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import traceback
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge import dist
from lmforge._version import __version__
from lmforge.checkpoint import CheckpointStore
from lmforge.components import split_input_key
from lmforge.errors import IntegrityWarning, LmforgeError, StageFailed, StageInputError
from lmforge.fsutil import atomic_write_text, combine_hashes, file_hashes
from lmforge.plugins import PluginManager
from lmforge.progress import Progress
from lmforge.spec.validate import StagePlan, ValidatedPipeline
from lmforge.stages import Artifact, StageContext

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1


def resolve_run_dir(pipeline: ValidatedPipeline, override: str | None = None) -> Path:
    spec = pipeline.spec
    raw = override or spec.run_dir or f"runs/{spec.name}"
    return Path(raw).expanduser().resolve()


def stage_seed(seed: int, stage_id: str) -> int:
    digest = hashlib.sha256(f"{seed}:{stage_id}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def stage_key(plan: StagePlan, seed: int, inputs: Mapping[str, Artifact]) -> str:
    c = plan.component
    doc = {
        "kind": c.kind, "plugin": c.name, "distribution": c.distribution, "version": c.version,
        "config": plan.config.model_dump(mode="json"), "seed": seed,
        "inputs": {slot: a.hash for slot, a in sorted(inputs.items())},
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def read_manifest(stage_dir: Path) -> dict[str, Any] | None:
    """The stage's manifest, or None when there is none or it cannot be read (not UTF-8, not
    JSON, not an object): such a stage counts as never run."""
    try:
        doc = json.loads((stage_dir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing, unreadable, not UTF-8, not JSON
        return None
    return doc if isinstance(doc, dict) else None


def _write_manifest(stage_dir: Path, manifest: Mapping[str, Any]) -> None:
    if not dist.is_main():
        return  # only the main process writes manifests
    atomic_write_text(stage_dir / MANIFEST, json.dumps(manifest, indent=2, default=str) + "\n")


def artifacts_from_manifest(stage_dir: Path, manifest: Mapping[str, Any]) -> dict[str, Artifact]:
    out = {}
    for name, rec in manifest.get("outputs", {}).items():
        path = stage_dir / rec["path"]
        meta_file = path / "artifact.json"
        meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
        out[name] = Artifact(kind=rec["kind"], path=path, hash=rec["hash"],
                             stage_id=manifest["stage_id"], meta=meta)
    return out


#: ``--verify`` levels: what is checked of a complete stage's outputs before they are reused.
VERIFY_LEVELS = ("hash", "size")


def changed_outputs(stage_dir: Path, manifest: Mapping[str, Any],
                    verify: str = "hash") -> str | None:
    """Why the outputs of a complete stage cannot be reused (a missing folder, or a file that
    is missing, added, resized or -- with ``verify="hash"`` -- whose sha256 differs from what
    was recorded when it was written), or None when they are intact. ``verify="size"`` skips
    the re-hash: a same-size change goes unnoticed."""
    from lmforge.fsutil import hash_files

    if verify not in VERIFY_LEVELS:
        raise ValueError(f"verify must be one of {VERIFY_LEVELS}, not {verify!r}")
    try:
        outputs = dict(manifest.get("outputs") or {})
        for name, rec in outputs.items():
            path = stage_dir / rec["path"]
            if not path.is_dir():
                return f"output {name!r} is missing on disk ({path})"
            recorded = rec.get("files")
            if recorded is None:  # a manifest from before per-file hashes: the folder hash
                if combine_hashes(file_hashes(path)) != rec["hash"]:
                    return f"output {name!r} changed on disk ({path})"
                continue
            on_disk = {str(p.relative_to(path)) for p in path.rglob("*")
                       if p.is_file() and not any(part.startswith(".")
                                                  for part in p.relative_to(path).parts)}
            for rel in sorted(set(recorded) | on_disk):  # the cheap checks first
                f = path / rel
                if rel not in recorded:
                    return f"output {name!r} has a file that was not written by the stage: {f}"
                if not f.is_file():
                    return f"output {name!r} lost {f}"
                size = recorded[rel][0]
                if f.stat().st_size != size:
                    return f"{f} has {f.stat().st_size} bytes, {size} were written"
            if verify == "hash":
                names = sorted(recorded)
                for rel, digest in zip(names, hash_files([path / r for r in names])):
                    if digest != recorded[rel][1]:
                        return f"{path / rel} does not match the sha256 recorded when it was " \
                               f"written"
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return f"{stage_dir / MANIFEST} does not describe the outputs readably " \
               f"({type(exc).__name__}: {exc})"
    return None


@contextlib.contextmanager
def run_dir_lock(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``run_dir/.lock`` (main rank); another holder is an error
    naming its pid."""
    import fcntl

    lock_path = run_dir / ".lock"
    fh = open(lock_path, "a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            raise LmforgeError(
                f"run directory {run_dir} is in use by another lmforge run (pid {holder}); wait "
                f"for it to finish, or choose another directory with --run-dir") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        yield
    finally:
        fh.close()


@dataclass
class StageOutcome:
    stage_id: str
    plugin: str
    status: str  # complete | reused | failed | interrupted | skipped
    seconds: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str = ""


@dataclass
class RunResult:
    run_dir: Path
    status: str
    stages: list[StageOutcome]

    @property
    def ran(self) -> list[str]:
        return [s.stage_id for s in self.stages if s.status == "complete"]


@dataclass
class StageStatus:
    """What ``plan`` or ``run`` would do with a stage, given what is on disk."""

    action: str  # reuse | run | resume
    key: str | None
    reason: str
    damaged: bool = False  # run because its manifest or outputs no longer match what was written


class Runner:
    """Runs a validated pipeline (see the module docstring)."""

    def __init__(self, pipeline: ValidatedPipeline, plugins: PluginManager, *,
                 run_dir: Path | None = None, progress: Progress | None = None,
                 force: set[str] | None = None, verify: str = "hash") -> None:
        self.pipeline = pipeline
        self.plugins = plugins
        self.run_dir = run_dir or resolve_run_dir(pipeline)
        self.progress = progress or Progress(enabled=False)
        self.force = set(force or ())
        if verify not in VERIFY_LEVELS:
            raise LmforgeError(f"verify must be one of {', '.join(VERIFY_LEVELS)}, not {verify!r}")
        self.verify = verify  # what is checked of a complete stage's outputs before reuse
        unknown = self.force - {s.id for s in pipeline.stages}
        if unknown:
            raise LmforgeError(f"--force names unknown stage(s): {', '.join(sorted(unknown))}")

    # -- selection -------------------------------------------------------------------------
    def select(self, only: str | None = None, until: str | None = None) -> list[StagePlan]:
        ids = {s.id for s in self.pipeline.stages}
        for opt, value in (("--only", only), ("--until", until)):
            if value is not None and value not in ids:
                raise LmforgeError(f"{opt} names unknown stage {value!r}; stages: "
                                   f"{', '.join(s.id for s in self.pipeline.stages)}")
        if only:
            return [self.pipeline.stage(only)]
        if until:
            keep = self.pipeline.upstream(until) | {until}
            return [s for s in self.pipeline.stages if s.id in keep]
        return list(self.pipeline.stages)

    # -- status ----------------------------------------------------------------------------
    def status(self, plan: StagePlan, inputs: Mapping[str, Artifact] | None) -> StageStatus:
        if inputs is None:
            return StageStatus("run", None, "an upstream stage runs first")
        key = stage_key(plan, self.pipeline.spec.seed, inputs)
        stage_dir = self.run_dir / plan.id
        manifest = read_manifest(stage_dir)
        if plan.id in self.force:
            return StageStatus("run", key, "forced")
        if manifest is None:
            if (stage_dir / MANIFEST).exists():
                return StageStatus("run", key, f"{stage_dir / MANIFEST} is unreadable",
                                   damaged=True)
            return StageStatus("run", key, "not run yet")
        if manifest.get("key") != key:
            return StageStatus("run", key, "config, plugin or inputs changed")
        if manifest.get("status") == "complete":
            problem = changed_outputs(stage_dir, manifest, self.verify)
            if problem:
                return StageStatus("run", key, f"outputs changed on disk: {problem}",
                                   damaged=True)
            return StageStatus("reuse", key, "unchanged")
        was = manifest.get("status")
        return StageStatus("resume", key, "previous attempt was killed (its manifest still says "
                           "running)" if was == "running" else f"previous attempt {was}")

    def existing_artifacts(self, stage_id: str, check: bool = False
                           ) -> dict[str, Artifact] | None:
        """The outputs of a complete stage on disk, if any. ``check``: verified first (see
        ``verify``); outputs that changed on disk are an error naming the file."""
        stage_dir = self.run_dir / stage_id
        manifest = read_manifest(stage_dir)
        if manifest and manifest.get("status") == "complete":
            problem = changed_outputs(stage_dir, manifest, self.verify) if check else None
            if problem:
                raise LmforgeError(
                    f"the outputs of stage {stage_id!r} changed on disk since it completed: "
                    f"{problem}; they are not used. Run stage {stage_id!r} again (without "
                    f"--only, or with --only {stage_id})")
            return artifacts_from_manifest(stage_dir, manifest)
        return None

    # -- run -------------------------------------------------------------------------------
    def run(self, only: str | None = None, until: str | None = None) -> RunResult:
        selected = self.select(only, until)
        dist.init()
        main = dist.is_main()
        if main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        dist.barrier()
        with run_dir_lock(self.run_dir) if main else contextlib.nullcontext():
            return self._run(selected)

    def _lifecycle(self, hook: str, **kwargs: Any) -> None:
        if dist.is_main():
            self.plugins.call_lifecycle(hook, **kwargs)

    def _run(self, selected: list[StagePlan]) -> RunResult:
        produced: dict[str, dict[str, Artifact]] = {}
        outcomes: list[StageOutcome] = []
        trackers = self._start_trackers() if dist.is_main() else []
        status = "complete"
        run_id = hashlib.sha256(str(self.run_dir).encode()).hexdigest()[:12]
        self._lifecycle("lmforge_pipeline_start", pipeline=self.pipeline.spec,
                        run_dir=self.run_dir, run_id=run_id)
        try:
            for plan in selected:
                inputs = self._inputs_for(plan, produced)
                outcome, artifacts = self._run_stage(plan, inputs)
                outcomes.append(outcome)
                produced[plan.id] = artifacts
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        except LmforgeError:
            status = "failed"
            raise
        finally:
            summary = {o.stage_id: {"status": o.status, "seconds": round(o.seconds, 2),
                                    **o.metrics} for o in outcomes}
            self._lifecycle("lmforge_pipeline_end", run_dir=self.run_dir, status=status,
                            summary=summary)
            for name in trackers:
                self.plugins.unregister(name)
        return RunResult(run_dir=self.run_dir, status=status, stages=outcomes)

    def _start_trackers(self) -> list[str]:
        names = []
        for i, cfg in enumerate(self.pipeline.spec.trackers):
            component = self.plugins.get_component("tracker", cfg.type)
            tracker = component.load_factory()(cfg, run_dir=self.run_dir)
            name = f"tracker-{i}-{cfg.type}"
            self.plugins.pm.register(tracker, name=name)
            names.append(name)
        return names

    def _inputs_for(self, plan: StagePlan, produced: dict[str, dict[str, Artifact]]
                    ) -> dict[str, Artifact]:
        inputs = {}
        for slot, (src, out_name) in plan.inputs.items():
            artifacts = produced.get(src)
            if not artifacts:
                # A stage outside this run's selection (--only): its outputs are verified (on
                # the main rank) as a reused stage's are, and every rank stops if they changed.
                artifacts, problem = dist.main_decides(lambda src=src: self._verified_outputs(src))
                if problem:
                    raise LmforgeError(problem)
            if not artifacts or out_name not in artifacts:
                raise LmforgeError(f"stage {plan.id!r} needs {src}.{out_name}, which has not been "
                                   f"built yet in {self.run_dir}; run without --only first")
            inputs[slot] = artifacts[out_name]
        return inputs

    def _verified_outputs(self, stage_id: str) -> tuple[dict[str, Artifact] | None, str | None]:
        try:
            return self.existing_artifacts(stage_id, check=True), None
        except LmforgeError as exc:
            return None, str(exc)

    def _run_stage(self, plan: StagePlan, inputs: dict[str, Artifact]
                   ) -> tuple[StageOutcome, dict[str, Artifact]]:
        main = dist.is_main()
        stage_dir = self.run_dir / plan.id
        c = plan.component
        st, previous = dist.main_decides(
            lambda: (self.status(plan, inputs), read_manifest(stage_dir) or {}))
        if st.action == "reuse":
            self._lifecycle("lmforge_stage_end", stage_id=plan.id, status="reused",
                            manifest=previous)
            return (StageOutcome(plan.id, c.name, "reused", previous.get("seconds", 0.0),
                                 dict(previous.get("metrics", {}))),
                    artifacts_from_manifest(stage_dir, previous))
        resumed = st.action == "resume"
        config_json = plan.config.model_dump(mode="json")
        manifest: dict[str, Any] = {
            "manifest_version": MANIFEST_VERSION, "stage_id": plan.id,
            "kind": c.stage_kind, "plugin": c.name, "distribution": c.distribution,
            "plugin_version": c.version, "lmforge_version": __version__,
            "config": config_json,
            "config_hash": hashlib.sha256(json.dumps(config_json, sort_keys=True).encode())
            .hexdigest(),
            "key": st.key, "seed": stage_seed(self.pipeline.spec.seed, plan.id),
            "inputs": {slot: {"stage": a.stage_id, "kind": a.kind, "hash": a.hash,
                              "path": str(a.path)} for slot, a in inputs.items()},
            "outputs": {}, "metrics": {}, "status": "running", "resumed": resumed,
            "reason": st.reason, "ranks": c.ranks_for(plan.config), "world_size": dist.world_size(),
            "started": time.time(),
        }
        if main:
            if st.damaged:
                warnings.warn(IntegrityWarning(f"stage {plan.id!r} runs again: {st.reason}"),
                              stacklevel=2)
            if not resumed and stage_dir.exists():
                shutil.rmtree(stage_dir)
            elif resumed:  # what a killed attempt left of its outputs is never part of them
                shutil.rmtree(stage_dir / "outputs", ignore_errors=True)
                if not CheckpointStore(stage_dir / "checkpoints").all():
                    # nothing to resume from: the stage starts over, its metrics too (a stage
                    # that resumes a checkpoint truncates them to it: ctx.truncate_metrics)
                    (stage_dir / "metrics.jsonl").unlink(missing_ok=True)
            stage_dir.mkdir(parents=True, exist_ok=True)
            _write_manifest(stage_dir, manifest)
        dist.barrier()
        everywhere = manifest["ranks"] == "all"
        ctx = StageContext(
            stage_id=plan.id, component=c, stage_dir=stage_dir, inputs=inputs,
            outputs=plan.outputs, plugins=self.plugins, seed=manifest["seed"], resumed=resumed,
            progress=self.progress if main else Progress(enabled=False),
            checkpoints=CheckpointStore(stage_dir / "checkpoints"),
            rank=dist.rank() if everywhere else 0,
            world_size=dist.world_size() if everywhere else 1,
        )
        ctx.checkpoints._on_saved = ctx.checkpoint_saved
        self._lifecycle("lmforge_stage_start", stage_id=plan.id, kind=c.stage_kind,
                        plugin=c.name, config=config_json, stage_dir=stage_dir,
                        resumed=resumed)
        start = time.monotonic()
        error: BaseException | None = None
        metrics: dict[str, Any] = {}
        if everywhere or main:
            # A main-only stage runs as a world of one: its collectives must not wait for the
            # ranks that are waiting for it.
            with contextlib.nullcontext() if everywhere else dist.solo():
                try:
                    stage = c.load_factory()(plan.config, ctx)
                    stage.check()
                    metrics = dict(stage.run() or {})
                except BaseException as exc:  # noqa: BLE001 - reported below, then re-raised
                    error = exc
        if everywhere and error is not None:
            # A rank that fails while others may sit in a collective must not wait for them:
            # it records the failure and raises; the launcher then stops the other ranks.
            raise self._fail(plan, manifest, stage_dir, error, start)
        if not everywhere:
            # The others learn the main rank's outcome (waiting on the long-timeout group).
            failed = dist.broadcast(None if error is None else f"{type(error).__name__}: {error}")
            if error is not None:
                raise self._fail(plan, manifest, stage_dir, error, start)
            if failed is not None:
                raise StageFailed(plan.id, c.name, LmforgeError(
                    f"failed on the main rank: {failed}"))
        dist.barrier()
        if main:
            try:
                outputs = self._record_outputs(plan, stage_dir, ctx.recorded_files)
            except BaseException as exc:  # noqa: BLE001
                dist.broadcast(None)
                raise self._fail(plan, manifest, stage_dir, exc, start) from None
            manifest.update(status="complete", outputs=outputs, metrics=_jsonable(metrics),
                            seconds=time.monotonic() - start, finished=time.time())
            _write_manifest(stage_dir, manifest)
            self._lifecycle("lmforge_stage_end", stage_id=plan.id, status="complete",
                            manifest=manifest)
        final = dist.broadcast(manifest if main else None)
        if final is None or final.get("status") != "complete":
            raise StageFailed(plan.id, c.name, LmforgeError("failed on the main rank"))
        return (StageOutcome(plan.id, c.name, "complete", final["seconds"], final["metrics"]),
                artifacts_from_manifest(stage_dir, final))

    def _record_outputs(self, plan: StagePlan, stage_dir: Path,
                        recorded: Mapping[str, Mapping[str, tuple[int, str]]] | None = None
                        ) -> dict[str, Any]:
        """Manifest entries of the declared outputs: path, folder hash and per-file
        ``[size, sha256]`` (checked before the stage is reused). Files the stage hashed while
        writing them (``ctx.record_output_files``) are not re-read."""
        outputs = {}
        for name, kind in plan.outputs.items():
            path = stage_dir / "outputs" / name
            if not path.is_dir() or not any(path.iterdir()):
                raise LmforgeError(f"stage plugin {plan.component.name!r} finished without "
                                   f"writing its declared output {name!r} ({kind}) to {path}")
            files = file_hashes(path, (recorded or {}).get(name))
            outputs[name] = {"kind": kind, "path": str(path.relative_to(stage_dir)),
                             "hash": combine_hashes(files),
                             "files": {rel: list(rec) for rel, rec in files.items()}}
        return outputs

    def _fail(self, plan: StagePlan, manifest: dict[str, Any], stage_dir: Path,
              exc: BaseException, start: float) -> BaseException:
        """Record a failure (manifest and ``error.log`` on the main rank, ``error-rank<N>.log``
        on others) and return the exception to raise."""
        c = plan.component
        interrupted = isinstance(exc, KeyboardInterrupt)
        log_path = stage_dir / ("error.log" if dist.is_main() else f"error-rank{dist.rank()}.log")
        with contextlib.suppress(OSError):
            log_path.write_text("".join(traceback.format_exception(exc)))
        if dist.is_main():
            manifest.update(status="interrupted" if interrupted else "failed",
                            error=f"{type(exc).__name__}: {exc}",
                            seconds=time.monotonic() - start, finished=time.time())
            _write_manifest(stage_dir, manifest)
            self._lifecycle("lmforge_failure", stage_id=plan.id, error=exc)
            self._lifecycle("lmforge_stage_end", stage_id=plan.id, status=manifest["status"],
                            manifest=manifest)
        if interrupted or isinstance(exc, (StageFailed, SystemExit)):
            return exc
        failed = StageFailed(plan.id, c.name, exc)
        if not isinstance(exc, StageInputError):
            failed.log_path = log_path  # type: ignore[attr-defined]
        failed.__cause__ = exc
        return failed

    # -- plan ------------------------------------------------------------------------------
    def plan(self) -> list[tuple[StagePlan, StageStatus, dict[str, Any]]]:
        """For each stage: what ``run`` would do, and the plugin's estimates."""
        rows = []
        will_build: set[str] = set()
        known: dict[str, dict[str, Artifact]] = {}
        configs = {s.id: s.config for s in self.pipeline.stages}
        for plan in self.pipeline.stages:
            inputs: dict[str, Artifact] | None = {}
            for slot, (src, out_name) in plan.inputs.items():
                if src in will_build or src not in known or out_name not in known[src]:
                    inputs = None
                    break
                inputs[slot] = known[src][out_name]  # type: ignore[index]
            st = self.status(plan, inputs)
            if st.action == "reuse":
                known[plan.id] = self.existing_artifacts(plan.id) or {}
            else:
                will_build.add(plan.id)
            estimate: dict[str, Any] = {}
            fn = getattr(plan.config, "estimate", None)
            if callable(fn):
                # as check_inputs sees them: an input taking several artifacts is a list
                upstream: dict[str, Any] = {}
                for key, (src, _) in plan.inputs.items():
                    slot, element = split_input_key(key)
                    decl = plan.component.input_slots(plan.config).get(slot)
                    if element is not None and decl is not None and decl.many:
                        upstream.setdefault(slot, []).append(configs[src])
                    else:
                        upstream[key] = configs[src]
                try:
                    estimate = dict(fn(upstream) or {})
                except Exception as exc:  # noqa: BLE001 - an estimate must never break plan
                    estimate = {"estimate error": str(exc)}
            rows.append((plan, st, estimate))
        return rows


def _jsonable(metrics: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in metrics.items():
        try:
            json.dumps(v)
            out[k] = v
        except TypeError:
            out[k] = float(v) if hasattr(v, "__float__") else str(v)
    return out
