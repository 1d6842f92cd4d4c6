"""Validate a located spec against the installed components; report every problem at once.

Order of checks (all run; issues are collected, not raised one by one):

1. structure: stages is a list of mappings with unique ids; each stage's ``kind`` and ``plugin``
   name an installed component (with "did you mean", or the broken/missing plugin named);
2. pydantic validation of the whole pipeline model (unknown keys, types, ranges), mapped back to
   file:line and key path, with "did you mean" for near-miss keys and component types;
3. wiring: every input names an existing stage and output of an accepted artifact kind, every
   required input is wired, and the stages form no cycle;
4. cross-stage checks, in execution order, for stage configs that define them (optional
   methods, so nothing that cannot run passes ``validate`` to fail at run time):

   * ``check_inputs(inputs: Mapping[str, UpstreamInput]) -> None`` raises ``ValueError`` (or
     :class:`lmforge.ConfigValueError` naming a key of the config) when the config does not
     fit what its inputs will be, e.g. ``loop.seq_len`` longer than the init model's
     ``max_seq_len`` (an input that takes several artifacts maps to a list of them);
   * ``output_architecture(inputs) -> Config | None`` gives the architecture of the ``model``
     the stage writes when the spec fixes it, passed on as ``UpstreamInput.architecture`` to the
     stages that consume that model.
"""

from __future__ import annotations

import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from lmforge.components import STAGE_KINDS, Component, Config, input_key, split_input_key
from lmforge.errors import ConfigValueError, PluginError, SpecError, SpecIssue
from lmforge.spec.source import Located, PathT, format_path, short_repr
from lmforge.specpath import CHECK_FILES, SPEC_DIR

if TYPE_CHECKING:
    from lmforge.plugins import PluginManager


@dataclass
class StagePlan:
    """One validated stage: its spec, component, wiring and declared outputs."""

    id: str
    spec: Any  # the validated stage model (id, kind, plugin, inputs, config)
    component: Component
    # slot -> (stage, output); an input that takes several artifacts (``InputSlot.many``) has
    # one entry per element, keyed ``input_key(slot, i)`` ("candidates[0]"), in spec order.
    inputs: dict[str, tuple[str, str]] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)  # output name -> artifact kind

    @property
    def config(self) -> Config:
        return self.spec.config


@dataclass(frozen=True)
class UpstreamInput:
    """What validation knows of one wired input of a stage, before anything has run (given to
    a stage config's ``check_inputs``)."""

    stage_id: str  # the producing stage
    output: str  # its output name (for an input taking several artifacts, ``check_inputs``
    # gets a list of these, in the spec's order)
    kind: str  # artifact kind
    config: Any  # the producing stage's validated config
    architecture: Any = None  # for a model: its architecture config, when the spec fixes it


@dataclass
class ValidatedPipeline:
    """The validated spec and its stages in execution order."""

    spec: Any  # the validated Pipeline model
    stages: list[StagePlan]  # topological order
    source: Located

    def stage(self, stage_id: str) -> StagePlan:
        for s in self.stages:
            if s.id == stage_id:
                return s
        raise KeyError(stage_id)

    def upstream(self, stage_id: str) -> set[str]:
        """Ids of all stages ``stage_id`` depends on, transitively."""
        seen: set[str] = set()
        todo = [stage_id]
        while todo:
            for src, _ in self.stage(todo.pop()).inputs.values():
                if src not in seen:
                    seen.add(src)
                    todo.append(src)
        return seen


def _did_you_mean(word: Any, options: list[Any]) -> str:
    """``"did you mean 'x'?"`` for a near miss among ``options``; "" when ``word`` is not a
    string (a number or mapping where a name was expected) or nothing is close."""
    if not isinstance(word, str):
        return ""
    names = [o for o in options if isinstance(o, str)]
    close = difflib.get_close_matches(word[:200], names, n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else ""


def _names_hint(plugins: PluginManager, kind: str) -> str:
    names = sorted(c.name for c in plugins.components(kind))
    return f"installed: {', '.join(names)}" if names else ""


class _Collector:
    def __init__(self, src: Located) -> None:
        self.src = src
        self.issues: list[SpecIssue] = []

    def add(self, path: PathT, message: str, hint: str = "") -> None:
        file, line = self.src.where(path)
        self.issues.append(SpecIssue(message, path=format_path(path), file=file, line=line,
                                     hint=hint))


def validate(src: Located, plugins: PluginManager, *, base_dir: Path | None = None,
             check_files: bool = False) -> ValidatedPipeline:
    """Validate ``src``; return the pipeline or raise :class:`SpecError` with every issue.

    ``base_dir`` (the spec file's folder) and ``check_files`` go to the config models as the
    validation context of :mod:`lmforge.specpath`: relative ``SpecPath`` values become absolute
    against ``base_dir``, and with ``check_files`` configs check that the files they name exist.
    """
    try:
        plugins.check_usable()
    except PluginError as exc:
        raise SpecError([SpecIssue(str(exc), file=src.file)]) from None
    out = _Collector(src)
    data = src.data
    if not isinstance(data, dict):
        out.add((), f"the spec must be a mapping with 'stages', got {type(data).__name__}")
        raise SpecError(out.issues)
    raw_stages = data.get("stages")
    bad_stage_idx: set[int] = set()
    components: dict[int, Component] = {}
    if isinstance(raw_stages, list):
        _check_stage_headers(raw_stages, plugins, out, bad_stage_idx, components)

    # Only the stage variants the spec names are built (fast start-up); all when a stage's
    # kind or plugin is missing, so pydantic reports that as it always does.
    resolved = isinstance(raw_stages, list) and all(
        i in components or i in bad_stage_idx for i, st in enumerate(raw_stages)
        if isinstance(st, dict))
    model = plugins.assembler().pipeline_model(
        list(components.values()) if resolved and components else None)
    validated = None
    try:
        validated = model.model_validate(data, context={
            SPEC_DIR: str(base_dir) if base_dir is not None else None, CHECK_FILES: check_files})
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            _report_pydantic(err, data, model, plugins, components, bad_stage_idx, out)
    if validated is None or out.issues:
        if not out.issues:  # pragma: no cover - pydantic failed without reportable errors
            out.add((), "the spec is invalid")
        # Wiring is still checked so that every problem is reported in one go.
        if isinstance(raw_stages, list):
            _check_wiring_raw(raw_stages, components, bad_stage_idx, plugins, out)
        raise SpecError(_dedupe(out.issues))

    plans = [StagePlan(id=s.id, spec=s, component=plugins.get_component(f"stage:{s.kind}", s.plugin))
             for s in validated.stages]
    for p in plans:
        p.outputs = p.component.output_kinds(p.config)
    order = _wire(plans, out)
    if not out.issues:
        _check_inputs(order, {p.id: i for i, p in enumerate(plans)}, out)
    if out.issues:
        raise SpecError(_dedupe(out.issues))
    return ValidatedPipeline(spec=validated, stages=order, source=src)


# -- cross-stage checks -------------------------------------------------------------------------
def _check_inputs(order: list[StagePlan], index: dict[str, int], out: _Collector) -> None:
    """Call each stage config's optional ``check_inputs`` / ``output_architecture`` (see the
    module docstring) in execution order. A plugin bug in them is reported, never raised."""
    by_id = {p.id: p for p in order}
    archs: dict[str, Any] = {}
    for plan in order:
        inputs: dict[str, Any] = {}
        for key, (src, name) in plan.inputs.items():
            kind = by_id[src].outputs[name]
            upstream = UpstreamInput(stage_id=src, output=name, kind=kind,
                                     config=by_id[src].config,
                                     architecture=archs.get(src) if kind == "model" else None)
            slot, element = split_input_key(key)
            decl = plan.component.input_slots(plan.config).get(slot)
            if element is not None and decl is not None and decl.many:
                inputs.setdefault(slot, []).append(upstream)
            else:
                inputs[key] = upstream
        path: PathT = ("stages", index[plan.id], "config")
        check = getattr(plan.config, "check_inputs", None)
        if callable(check):
            try:
                check(inputs)
            except ConfigValueError as exc:
                out.add(path + exc.path, exc.message)
            except ValueError as exc:
                out.add(path, str(exc))
            except Exception as exc:  # noqa: BLE001 - a plugin bug must not crash validation
                out.add(path, f"stage plugin {plan.component.name!r} failed to check its inputs: "
                        f"{type(exc).__name__}: {exc}", "a bug in the plugin; report it")
        produce = getattr(plan.config, "output_architecture", None)
        if callable(produce):
            try:
                archs[plan.id] = produce(inputs)
            except Exception:  # noqa: BLE001 - unknown then; the stage checks at run time
                archs[plan.id] = None


# -- structure ----------------------------------------------------------------------------------
def _check_stage_headers(stages: list[Any], plugins: PluginManager, out: _Collector,
                         bad: set[int], components: dict[int, Component]) -> None:
    ids: dict[str, int] = {}
    for i, st in enumerate(stages):
        path = ("stages", i)
        if not isinstance(st, dict):
            continue  # pydantic reports the type error
        sid = st.get("id")
        if isinstance(sid, str):
            if sid in ids:
                out.add(path + ("id",), f"duplicate stage id {sid!r} (also stages[{ids[sid]}])",
                        "stage ids must be unique: they name the stage folders")
            ids.setdefault(sid, i)
        kind = st.get("kind")
        if kind is None:
            continue  # pydantic reports "missing"
        if kind not in STAGE_KINDS:
            out.add(path + ("kind",), f"unknown stage kind {short_repr(kind)}; expected one of "
                    f"{', '.join(STAGE_KINDS)}", _did_you_mean(kind, list(STAGE_KINDS)))
            bad.add(i)
            continue
        plugin = st.get("plugin")
        if plugin is None:
            continue
        if not isinstance(plugin, str):
            out.add(path + ("plugin",), f"plugin must be the name of a {kind} stage plugin (a "
                    f"string), got {short_repr(plugin)}", _names_hint(plugins, f"stage:{kind}"))
            bad.add(i)
            continue
        try:
            components[i] = plugins.get_component(f"stage:{kind}", plugin)
        except PluginError as exc:
            out.add(path + ("plugin",), str(exc))
            bad.add(i)


# -- pydantic errors ----------------------------------------------------------------------------
def _clean_loc(loc: tuple[Any, ...], data: Any, names_key: bool = True) -> tuple[PathT, bool]:
    """Drop discriminator tags from a pydantic location; True if the last key is absent.

    ``names_key``: the error is about the last key itself (missing, unknown), so a last part
    that is not in the data is kept; otherwise it is a union tag (``model.dense``) and dropped.
    """
    path: list[Any] = []
    cur = data
    missing = False
    for i, part in enumerate(loc):
        if isinstance(cur, dict) and _has_key(cur, part):
            path.append(part)
            cur = cur[part]
        elif isinstance(cur, (list, tuple)) and isinstance(part, int) and 0 <= part < len(cur):
            path.append(part)
            cur = cur[part]
        elif i == len(loc) - 1 and isinstance(cur, dict) and names_key:
            path.append(part)
            missing = True
        # else: a union tag (e.g. 'train', 'pretrain'), not a key of the data
    return tuple(path), missing


def _has_key(mapping: dict[Any, Any], key: Any) -> bool:
    try:
        return key in mapping
    except TypeError:  # an unhashable key
        return False


def _report_pydantic(err: dict[str, Any], data: Any, model: type[BaseModel], plugins: PluginManager,
                     components: dict[int, Component], bad: set[int], out: _Collector) -> None:
    etype = err["type"]
    got = err.get("input")
    path, _ = _clean_loc(tuple(err["loc"]), data,
                         names_key=etype in ("missing", "extra_forbidden"))
    if len(path) >= 2 and path[0] == "stages" and path[1] in bad:
        return  # the stage's kind/plugin is already reported; its config can't be checked
    error = err.get("ctx", {}).get("error")
    if etype == "value_error" and isinstance(error, ConfigValueError):
        # The key it names may be a default absent from the spec: where() then gives
        # the line of its nearest written ancestor.
        out.add(path + error.path, error.message)
        return
    if etype == "extra_forbidden":
        key = path[-1]
        allowed = _allowed_keys(model, path[:-1], data, plugins, components)
        hint = _did_you_mean(key, allowed)
        if not hint and allowed:
            hint = f"allowed keys: {', '.join(allowed)}"
        out.add(path, f"unknown key {key!r}", hint)
    elif etype == "missing":
        out.add(path, f"missing required key {path[-1]!r}")
    elif etype in ("union_tag_invalid", "literal_error") and path and path[-1] in ("type", "kind",
                                                                                  "plugin"):
        ctx = err.get("ctx", {})
        tags = [t.strip(" '") for t in str(ctx.get("expected_tags", ctx.get("expected", "")))
                .replace(" or ", ",").split(",") if t.strip(" '")]
        out.add(path, f"unknown {path[-1]} {short_repr(got)}; expected one of "
                f"{', '.join(tags)}", _did_you_mean(got, tags))
    elif etype == "union_tag_invalid":
        ctx = err.get("ctx", {})
        disc = str(ctx.get("discriminator", "")).strip("'")
        tags = [t.strip(" '") for t in str(ctx.get("expected_tags", "")).split(",") if t.strip()]
        tag = ctx.get("tag")
        out.add(path + (disc,), f"unknown {disc} {short_repr(tag)}; expected one of "
                f"{', '.join(tags)}", _did_you_mean(tag, tags))
    elif etype == "union_tag_not_found":
        disc = str(err.get("ctx", {}).get("discriminator", "")).strip("'")
        out.add(path, f"missing required key {disc!r}")
    else:
        msg = err["msg"]
        if etype in ("value_error", "assertion_error"):
            msg = msg.split(", ", 1)[-1]  # drop pydantic's "Value error, " prefix
        elif not isinstance(got, (dict, list)) and etype not in ("model_type", "dict_type"):
            msg += f"; got {short_repr(got)}"
        out.add(path, msg)


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """Pydantic models reachable from an annotation (through Optional, Union, Annotated)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _models_in(typing.get_args(annotation)[0])
    if origin is not None:
        found = []
        for a in typing.get_args(annotation):
            found += _models_in(a)
        return found
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return []


def _pick(models: list[type[BaseModel]], value: Any) -> type[BaseModel] | None:
    if len(models) == 1:
        return models[0]
    if isinstance(value, dict):
        for m in models:
            for disc in ("type", "plugin", "kind"):
                f = m.model_fields.get(disc)
                if f is None:
                    continue
                args = typing.get_args(f.annotation)
                if args and value.get(disc) not in args:
                    break
            else:
                return m
    return None


def _allowed_keys(root: type[BaseModel], path: PathT, data: Any, plugins: PluginManager,
                  components: dict[int, Component]) -> list[str]:
    """Field names of the model that validates the mapping at ``path`` (best effort)."""
    model: type[BaseModel] | None = root
    cur = data
    i = 0
    while i < len(path) and model is not None:
        part = path[i]
        if model is root and part == "stages" and i + 1 < len(path):
            idx = path[i + 1]
            comp = components.get(idx)
            if comp is None:
                return []
            model = plugins.assembler().stage_model(comp)
            cur = cur["stages"][idx]
            i += 2
            continue
        f = model.model_fields.get(part) if isinstance(part, str) else None
        if f is None:
            return []
        cur = cur.get(part) if isinstance(cur, dict) else None
        ann = f.annotation
        # Step through list/dict containers when the path indexes into them.
        while i + 1 < len(path) and typing.get_origin(ann) in (list, dict) and \
                isinstance(cur, (list, dict)):
            i += 1
            key = path[i]
            cur = cur[key] if isinstance(cur, dict) and key in cur else (
                cur[key] if isinstance(cur, list) and isinstance(key, int) and key < len(cur) else None)
            ann = typing.get_args(ann)[-1]
        model = _pick(_models_in(ann), cur)
        i += 1
    return sorted(model.model_fields) if model is not None else []


# -- wiring -------------------------------------------------------------------------------------
def _parse_ref(ref: str) -> tuple[str, str | None]:
    sid, _, out_name = ref.partition(".")
    return sid, (out_name or None)


def _resolve_input(plan: StagePlan, slot: str, ref: str, by_id: dict[str, StagePlan],
                   out: _Collector, path: PathT) -> tuple[str, str] | None:
    slots = plan.component.input_slots(plan.config)
    if slot not in slots:
        names = list(slots)
        out.add(path, f"stage plugin {plan.component.name!r} has no input {slot!r}"
                + (f"; its inputs are {', '.join(names)}" if names else "; it takes no inputs"),
                _did_you_mean(slot, names))
        return None
    if not isinstance(ref, str):
        out.add(path, f"an input must name a stage id, got {ref!r}")
        return None
    sid, out_name = _parse_ref(ref)
    if sid not in by_id:
        out.add(path, f"input {slot!r} refers to unknown stage {sid!r}",
                _did_you_mean(sid, list(by_id)))
        return None
    if sid == plan.id:
        out.add(path, f"stage {plan.id!r} cannot consume its own output")
        return None
    src = by_id[sid]
    accepts = slots[slot].accepts
    if out_name is None:
        matching = [n for n, k in src.outputs.items() if k in accepts]
        if len(matching) != 1:
            produced = ", ".join(f"{n} ({k})" for n, k in src.outputs.items()) or "nothing"
            if not matching:
                out.add(path, f"input {slot!r} accepts {' or '.join(accepts)}, but stage {sid!r} "
                        f"produces {produced}")
            else:
                out.add(path, f"stage {sid!r} has several outputs input {slot!r} could take "
                        f"({', '.join(matching)}); write '{sid}.<output>'")
            return None
        out_name = matching[0]
    elif out_name not in src.outputs:
        out.add(path, f"stage {sid!r} has no output {out_name!r}; it produces "
                f"{', '.join(src.outputs) or 'nothing'}", _did_you_mean(out_name, list(src.outputs)))
        return None
    elif src.outputs[out_name] not in accepts:
        out.add(path, f"input {slot!r} accepts {' or '.join(accepts)}, but {sid}.{out_name} is "
                f"{src.outputs[out_name]}")
        return None
    return sid, out_name


def _wire_many(plan: StagePlan, slot: str, refs: Any, by_id: dict[str, StagePlan],
               out: _Collector, path: PathT) -> None:
    """Wire an input that takes several artifacts: a non-empty list (when required) of distinct
    outputs, each of an accepted kind; element ``j`` becomes ``plan.inputs[input_key(slot, j)]``."""
    decl = plan.component.input_slots(plan.config)[slot]
    accepts = " or ".join(decl.accepts)
    if not isinstance(refs, list):
        out.add(path, f"input {slot!r} of stage plugin {plan.component.name!r} takes a list of "
                f"stage ids ({accepts}), got {short_repr(refs)}",
                f"write '{slot}: [{refs if isinstance(refs, str) else '<stage id>'}, ...]'")
        return
    if not refs:
        if decl.required:
            out.add(path, f"input {slot!r} lists no stage; stage plugin "
                    f"{plan.component.name!r} needs at least one ({accepts})",
                    decl.help or f"write '{slot}: [<stage id>, <stage id>]'")
        return
    seen: dict[tuple[str, str], int] = {}
    for j, ref in enumerate(refs):
        resolved = _resolve_input(plan, slot, ref, by_id, out, (*path, j))
        if not resolved:
            continue
        if resolved in seen:
            out.add((*path, j), f"input {slot!r} lists {resolved[0]}.{resolved[1]} twice "
                    f"(items {seen[resolved]} and {j})", "list each artifact once")
            continue
        seen[resolved] = j
        plan.inputs[input_key(slot, j)] = resolved


def _wire(plans: list[StagePlan], out: _Collector) -> list[StagePlan]:
    by_id = {p.id: p for p in plans}
    for i, p in enumerate(plans):
        for slot, ref in p.spec.inputs.items():
            path: PathT = ("stages", i, "inputs", slot)
            decl = p.component.input_slots(p.config).get(slot)
            if decl is not None and decl.many:
                _wire_many(p, slot, ref, by_id, out, path)
                continue
            if decl is not None and isinstance(ref, list):
                out.add(path, f"input {slot!r} of stage plugin {p.component.name!r} takes one "
                        f"stage id, got a list", "only inputs that take several artifacts take a "
                        f"list; write '{slot}: <stage id>'")
                continue
            resolved = _resolve_input(p, slot, ref, by_id, out, path)
            if resolved:
                p.inputs[slot] = resolved
        for slot, decl in p.component.input_slots(p.config).items():
            if decl.required and slot not in p.spec.inputs:
                out.add(("stages", i, "inputs"), f"stage {p.id!r} ({p.component.name}) needs "
                        f"input {slot!r} ({' or '.join(decl.accepts)})",
                        decl.help or f"add 'inputs: {{{slot}: <stage id>}}'")
    # Topological order (Kahn), keeping spec order among ready stages; report cycles.
    order: list[StagePlan] = []
    done: set[str] = set()
    pending = list(plans)
    while pending:
        ready = [p for p in pending if all(src in done for src, _ in p.inputs.values())]
        if not ready:
            cycle = " -> ".join(p.id for p in pending)
            idx = plans.index(pending[0])
            out.add(("stages", idx, "inputs"), f"stages depend on each other in a cycle: {cycle}")
            break
        for p in ready:
            order.append(p)
            done.add(p.id)
            pending.remove(p)
    return order


def _check_wiring_raw(stages: list[Any], components: dict[int, Component], bad: set[int],
                      plugins: PluginManager, out: _Collector) -> None:
    """Reference checks on unvalidated data (when pydantic failed), so they are reported too."""
    ids = {s["id"]: i for i, s in enumerate(stages) if isinstance(s, dict)
           and isinstance(s.get("id"), str)}
    for i, st in enumerate(stages):
        if not isinstance(st, dict) or i in bad or not isinstance(st.get("inputs"), dict):
            continue
        for slot, value in st["inputs"].items():
            refs = list(enumerate(value)) if isinstance(value, list) else [(None, value)]
            for j, ref in refs:
                if isinstance(ref, str) and _parse_ref(ref)[0] not in ids:
                    sid = _parse_ref(ref)[0]
                    where: PathT = ("stages", i, "inputs", slot) + (() if j is None else (j,))
                    out.add(where, f"input {slot!r} refers to unknown stage {sid!r}",
                            _did_you_mean(sid, list(ids)))


def _dedupe(issues: list[SpecIssue]) -> list[SpecIssue]:
    seen, out = set(), []
    for i in issues:
        key = (i.path, i.message)
        if key not in seen:
            seen.add(key)
            out.append(i)
    return sorted(out, key=lambda i: (i.file or "", i.line or 0))


def load_and_validate(spec_path: str, plugins: PluginManager,
                      overrides: list[str] | None = None) -> ValidatedPipeline:
    """Read, override and validate a spec file (the path every CLI command takes)."""
    from lmforge.spec.source import apply_overrides, load_spec_file

    src = load_spec_file(spec_path)
    if overrides:
        apply_overrides(src, overrides)
    # Relative paths in the spec (and in overrides) are relative to the spec file's folder.
    return validate(src, plugins, base_dir=Path(spec_path).resolve().parent, check_files=True)


