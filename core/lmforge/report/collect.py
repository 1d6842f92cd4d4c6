"""Read a run folder into :class:`RunData`: stages from their manifests, metric series from
``metrics.jsonl``, dataset statistics from ``dataset/*`` artifacts, and the lineage edges from
the manifests' inputs. Reads JSON only (no torch, no plugin): a run folder is enough.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge.errors import LmforgeError

MANIFEST = "manifest.json"
METRICS = "metrics.jsonl"


class NotARunFolder(LmforgeError):
    """The folder given to the report holds no stage (no ``<stage>/manifest.json``)."""


@dataclass
class Edge:
    """``source`` feeds ``target`` through the input slots ``slots`` (one edge per pair)."""

    source: str
    target: str
    slots: list[str] = field(default_factory=list)


@dataclass
class DatasetInfo:
    """A ``dataset/*`` output of a stage: its ``artifact.json`` and ``stats.json`` (either may
    be empty when the file is absent)."""

    name: str
    kind: str
    path: Path
    meta: dict[str, Any]
    stats: dict[str, Any]


@dataclass
class StageInfo:
    """One stage of the run as its folder tells it."""

    stage_id: str
    kind: str = ""
    plugin: str = ""
    status: str = "not run"  # complete | failed | interrupted | running | not run
    seconds: float | None = None
    started: float | None = None
    finished: float | None = None
    resumed: bool = False
    reason: str = ""
    error: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)  # what the stage returned
    inputs: list[tuple[str, str]] = field(default_factory=list)  # (slot, source stage)
    outputs: dict[str, tuple[str, Path]] = field(default_factory=dict)  # name -> (kind, path)
    #: every numeric key of ``metrics.jsonl`` -> [(step, value)], ascending steps, one value a
    #: step (a step logged twice keeps its last value)
    series: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    datasets: list[DatasetInfo] = field(default_factory=list)

    @property
    def is_training(self) -> bool:
        """Whether the stage logged a training loss (``train/loss``) — it gets loss and
        learning-rate plots."""
        return bool(self.series.get("train/loss"))

    @property
    def is_evaluation(self) -> bool:
        return self.kind == "evaluate" and bool(self.model_metrics())

    def input_stage(self, slot: str) -> str | None:
        return next((src for s, src in self.inputs if s == slot), None)

    def model_metrics(self) -> dict[str, float | int]:
        """Numeric metrics the stage returned, ``baseline/...`` ones left out."""
        return {k: v for k, v in self.metrics.items()
                if is_number(v) and not k.startswith("baseline/")}

    def baseline_metrics(self) -> dict[str, float | int]:
        """``baseline/<name>`` metrics (an evaluate stage given a baseline model), as ``name``."""
        return {k[len("baseline/"):]: v for k, v in self.metrics.items()
                if is_number(v) and k.startswith("baseline/")}

    def final_values(self) -> dict[str, float | int]:
        """The metrics a training stage ended with: what it returned when it completed, else
        the last logged value of each ``train/*`` and ``heldout/*`` series."""
        if self.status == "complete" and self.metrics:
            return {k: v for k, v in self.metrics.items() if is_number(v)}
        return {k: pts[-1][1] for k, pts in self.series.items()
                if pts and k.split("/")[0] in ("train", "heldout")}


@dataclass
class RunData:
    run_dir: Path
    title: str
    stages: list[StageInfo]  # dependencies first
    edges: list[Edge]

    def stage(self, stage_id: str) -> StageInfo:
        return next(s for s in self.stages if s.stage_id == stage_id)

    @property
    def training(self) -> list[StageInfo]:
        return [s for s in self.stages if s.is_training]

    @property
    def evaluations(self) -> list[StageInfo]:
        return [s for s in self.stages if s.is_evaluation]

    @property
    def data(self) -> list[StageInfo]:
        return [s for s in self.stages if s.datasets]

    @property
    def others(self) -> list[StageInfo]:
        """Stages with metrics that no other section shows (tokenizer, export, import ...)."""
        shown = {id(s) for s in (*self.training, *self.evaluations, *self.data)}
        return [s for s in self.stages if id(s) not in shown and s.metrics]


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_series(path: Path) -> dict[str, list[tuple[int, float]]]:
    """Numeric series of a ``metrics.jsonl`` (``time`` left out). A line that is not JSON (the
    last one of a killed process) is skipped."""
    by_key: dict[str, dict[int, float]] = {}
    try:
        fh = path.open(encoding="utf-8")
    except OSError:
        return {}
    with fh:
        for line in fh:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if not isinstance(rec, dict) or not is_number(rec.get("step")):
                continue
            step = int(rec["step"])
            for key, value in rec.items():
                if key in ("step", "time") or not is_number(value):
                    continue
                value = float(value)
                if math.isfinite(value):
                    by_key.setdefault(key, {})[step] = value
    return {k: sorted(v.items()) for k, v in by_key.items()}


def read_stage(stage_dir: Path) -> StageInfo:
    """A stage folder: its manifest (status ``not run`` without one), metrics and datasets."""
    info = StageInfo(stage_id=stage_dir.name)
    manifest = _read_json(stage_dir / MANIFEST)
    if isinstance(manifest, dict):
        info.kind = str(manifest.get("kind") or "")
        info.plugin = str(manifest.get("plugin") or "")
        info.status = str(manifest.get("status") or "unknown")
        info.seconds = manifest.get("seconds") if is_number(manifest.get("seconds")) else None
        info.started = manifest.get("started") if is_number(manifest.get("started")) else None
        info.finished = manifest.get("finished") if is_number(manifest.get("finished")) else None
        info.resumed = bool(manifest.get("resumed"))
        info.reason = str(manifest.get("reason") or "")
        info.error = str(manifest.get("error") or "")
        metrics = manifest.get("metrics")
        info.metrics = dict(metrics) if isinstance(metrics, dict) else {}
        for slot, rec in (manifest.get("inputs") or {}).items():
            if isinstance(rec, dict) and rec.get("stage"):
                info.inputs.append((str(slot), str(rec["stage"])))
        for name, rec in (manifest.get("outputs") or {}).items():
            if isinstance(rec, dict) and rec.get("path"):
                info.outputs[str(name)] = (str(rec.get("kind", "")), stage_dir / rec["path"])
    info.series = read_series(stage_dir / METRICS)
    for name, (kind, path) in info.outputs.items():
        if kind.startswith("dataset/"):
            meta, stats = _read_json(path / "artifact.json"), _read_json(path / "stats.json")
            info.datasets.append(DatasetInfo(name, kind, path,
                                             meta if isinstance(meta, dict) else {},
                                             stats if isinstance(stats, dict) else {}))
    return info


def _order(stages: Sequence[StageInfo], preferred: Sequence[str]) -> list[StageInfo]:
    """Dependencies first; among stages free to go, the pipeline's order when known, else the
    order they started in, else by id."""
    rank = {sid: i for i, sid in enumerate(preferred)}
    by_id = {s.stage_id: s for s in stages}
    deps = {s.stage_id: {src for _, src in s.inputs if src in by_id and src != s.stage_id}
            for s in stages}

    def key(sid: str) -> tuple[float, float, str]:
        s = by_id[sid]
        return (rank.get(sid, math.inf), s.started if s.started is not None else math.inf, sid)

    done: list[str] = []
    left = set(by_id)
    while left:
        ready = [sid for sid in left if not (deps[sid] & left)] or list(left)  # cycle: any
        nxt = min(ready, key=key)
        done.append(nxt)
        left.remove(nxt)
    return [by_id[sid] for sid in done]


def collect_run(run_dir: Path, stage_ids: Iterable[str] | None = None,
                title: str | None = None) -> RunData:
    """Read ``run_dir``. ``stage_ids`` (a pipeline's stages, in its order) limits the report to
    those stages and lists the ones not run yet; without it every folder holding a
    ``manifest.json`` is a stage. :class:`NotARunFolder` if there is none."""
    run_dir = Path(run_dir)
    if stage_ids is None:
        if not run_dir.is_dir():
            raise NotARunFolder(f"{run_dir} is not a folder")
        ids = sorted(p.parent.name for p in run_dir.glob(f"*/{MANIFEST}"))
        if not ids:
            raise NotARunFolder(f"{run_dir} holds no stage (no <stage>/{MANIFEST}); give the "
                                f"run folder of a pipeline (`lmforge run` prints it)")
        preferred: list[str] = []
    else:
        ids = preferred = list(stage_ids)
    stages = [read_stage(run_dir / sid) for sid in ids]
    known = {s.stage_id for s in stages}
    # An input from a stage outside the report (its folder gone) still shows in the lineage.
    for s in list(stages):
        for _, src in s.inputs:
            if src not in known:
                known.add(src)
                stages.append(StageInfo(stage_id=src, status="missing"))
    stages = _order(stages, preferred)
    edges: dict[tuple[str, str], Edge] = {}
    for s in stages:
        for slot, src in s.inputs:
            edges.setdefault((src, s.stage_id), Edge(src, s.stage_id)).slots.append(slot)
    position = {s.stage_id: i for i, s in enumerate(stages)}
    ordered = sorted(edges.values(), key=lambda e: (position[e.target], position[e.source]))
    return RunData(run_dir=run_dir, title=title or run_dir.resolve().name, stages=stages,
                   edges=ordered)

