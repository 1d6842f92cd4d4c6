"""Read a YAML spec safely, remembering the line of every key, and apply CLI overrides.

Only ``yaml.SafeLoader`` is used: no object construction from tags. Locations are keyed by the
path of a value as a tuple (``("stages", 2, "config", "lr")``); ``Located.where(path)`` finds the
nearest known location for any path, so a missing key points at its parent mapping.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lmforge.errors import SpecError, SpecIssue

PathT = tuple[Any, ...]


@dataclass
class Located:
    """Parsed spec data plus where each path came from."""

    data: Any
    file: str
    lines: dict[PathT, int] = field(default_factory=dict)  # 1-based line of each key/item
    overridden: dict[PathT, str] = field(default_factory=dict)  # path -> "key=value"

    def where(self, path: PathT) -> tuple[str, int | None]:
        """(file or override label, line) for ``path`` or its nearest located ancestor."""
        for i in range(len(path), -1, -1):
            prefix = tuple(path[:i])
            if prefix in self.overridden:
                return f"override '{self.overridden[prefix]}'", None
            if prefix in self.lines:
                return self.file, self.lines[prefix]
        return self.file, None


def _walk(node: yaml.Node, path: PathT, lines: dict[PathT, int], issues: list[SpecIssue],
          file: str) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            line = key_node.start_mark.line + 1
            if key in seen:
                issues.append(SpecIssue(f"duplicate key {key!r} (first defined on line "
                                        f"{seen[key]})", path=format_path(path + (key,)),
                                        file=file, line=line,
                                        hint="YAML keeps only the last one; remove one"))
            seen[key] = line
            lines[path + (key,)] = line
            _walk(value_node, path + (key,), lines, issues, file)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[path + (i,)] = item.start_mark.line + 1
            _walk(item, path + (i,), lines, issues, file)


def load_yaml(text: str, file: str) -> Located:
    """Parse YAML text; raise :class:`SpecError` with file:line on syntax errors."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise SpecError([SpecIssue("the spec is empty; expected a mapping with 'stages'",
                                       file=file, line=1)])
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise SpecError([SpecIssue(f"invalid YAML: {exc.problem or exc}", file=file,
                                   line=line)]) from None
    finally:
        loader.dispose()
    lines: dict[PathT, int] = {(): node.start_mark.line + 1}
    issues: list[SpecIssue] = []
    _walk(node, (), lines, issues, file)
    if issues:
        raise SpecError(issues)
    return Located(data=data, file=file, lines=lines)


def load_spec_file(path: str | Path) -> Located:
    path = Path(path)
    if not path.is_file():
        raise SpecError([SpecIssue(f"spec file not found: {path}", file=str(path))])
    return load_yaml(path.read_text(encoding="utf-8"), str(path))


def format_path(path: PathT) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def apply_overrides(spec: Located, overrides: list[str]) -> None:
    """Apply ``a.b.c=value`` overrides in place (values parsed as YAML scalars/flow).

    The first segment may be a stage id: ``pretrain.steps=200`` sets
    ``stages[<pretrain>].config.steps``; ``pretrain.inputs.dataset=x`` sets the stage's own
    field when it is one of ``inputs``, ``plugin``, ``kind``, ``description``. Otherwise the path
    is from the top of the spec (``seed=3``, ``run_dir=runs/x``).
    """
    issues: list[SpecIssue] = []
    data = spec.data
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            issues.append(SpecIssue(f"override {item!r} is not of the form key.path=value",
                                    file="command line"))
            continue
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            issues.append(SpecIssue(f"override {item!r}: value is not valid YAML: {exc}",
                                    file="command line"))
            continue
        parts: list[Any] = key.split(".")
        path: list[Any] = []
        stages = data.get("stages") if isinstance(data, dict) else None
        ids = [s.get("id") for s in stages if isinstance(s, dict)] if isinstance(stages, list) else []
        if parts[0] in ids and (not isinstance(data, dict) or parts[0] not in data):
            path = ["stages", ids.index(parts[0])]
            rest = parts[1:]
            if not rest or rest[0] not in {"inputs", "plugin", "kind", "description", "config"}:
                path.append("config")
            path += rest
        else:
            path = parts
        path = [int(p) if isinstance(p, str) and p.isdigit() else p for p in path]
        cur = data
        ok = True
        for i, p in enumerate(path[:-1]):
            nxt = cur[p] if isinstance(cur, dict) and p in cur else (
                cur[p] if isinstance(cur, list) and isinstance(p, int) and p < len(cur) else None)
            if nxt is None and isinstance(cur, dict):
                nxt = cur[p] = {}
            if not isinstance(nxt, (dict, list)):
                issues.append(SpecIssue(f"override {item!r}: {format_path(tuple(path[:i + 1]))} "
                                        f"is not a mapping", file="command line"))
                ok = False
                break
            cur = nxt
        if not ok:
            continue
        last = path[-1]
        if isinstance(cur, list):
            if not isinstance(last, int) or last >= len(cur):
                issues.append(SpecIssue(f"override {item!r}: no item {last} in "
                                        f"{format_path(tuple(path[:-1]))}", file="command line"))
                continue
        cur[last] = value
        spec.overridden[tuple(path)] = item
    if issues:
        raise SpecError(issues)
