"""Read a YAML spec safely, remembering the line of every key, and apply CLI overrides.

Only ``yaml.SafeLoader`` is used: no object construction from tags. Locations are keyed by the
path of a value as a tuple (``("stages", 2, "config", "lr")``); ``Located.where(path)`` finds the
nearest known location for any path, so a missing key points at its parent mapping.

Untrusted input is bounded before anything walks it, so a bad file or override is a
:class:`SpecError` with file:line (or the override named), never a traceback or a hang:

* the file must be UTF-8 text of at most :data:`MAX_SPEC_BYTES` (compressed, UTF-16/32 and
  other binary files are named as such) without control characters;
* values nest at most :data:`MAX_DEPTH` levels, aliases included;
* aliases (``*name``) are used at most :data:`MAX_ALIASES` times and together expand to at most
  :data:`MAX_ALIAS_VALUES` values (a "billion laughs" document is refused, not expanded), and no
  alias refers to the collection it is inside;
* integers fit a signed 64-bit integer (so none exceeds Python's int-to-str limit either), and a
  scalar that cannot be converted (``!!int abc``, ``2001-13-01``) is reported where it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor

from lmforge.errors import SpecError, SpecIssue

PathT = tuple[Any, ...]

#: Largest spec file read, in bytes. A pipeline spec is a few KB; this only stops a wrong file.
MAX_SPEC_BYTES = 4 * 1024 * 1024
#: Deepest nesting of values (mappings and sequences), counted through aliases. Real specs
#: nest about 7 levels (``stages[0].config.loop.optim.betas[0]``).
MAX_DEPTH = 64
#: Most alias uses (``*name``) in one document.
MAX_ALIASES = 1_000
#: Most values that all alias uses together may expand to (each use counts the whole value it
#: repeats, nested aliases expanded).
MAX_ALIAS_VALUES = 10_000
#: Integers must fit a signed 64-bit integer.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: Longest integer literal read (digits, sign and underscores); longer ones are refused before
#: conversion, far below Python's int-to-str limit.
_MAX_INT_LITERAL = 40

# Magic numbers of files that are certainly not YAML text, to name them in the error.
_BINARY_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "gzip-compressed"), (b"PK\x03\x04", "a zip archive"),
    (b"BZh", "bzip2-compressed"), (b"\xfd7zXZ\x00", "xz-compressed"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed"), (b"\x00\x00\xfe\xff", "UTF-32 text"),
    (b"\xff\xfe\x00\x00", "UTF-32 text"), (b"\xff\xfe", "UTF-16 text"),
    (b"\xfe\xff", "UTF-16 text"))


@dataclass
class Located:
    """Parsed spec data plus where each path came from."""

    data: Any
    file: str
    lines: dict[PathT, int] = field(default_factory=dict)  # 1-based line of each key/item
    overridden: dict[PathT, str] = field(default_factory=dict)  # path -> "key=value"

    def where(self, path: PathT) -> tuple[str, int | None]:
        """(file or override label, line) for ``path`` or its nearest located ancestor.

        An override of ``path`` or of any ancestor wins over file lines: it replaced what the
        file had there (whose lines are stale)."""
        prefixes = [tuple(path[:i]) for i in range(len(path), -1, -1)]
        for prefix in prefixes:
            if prefix in self.overridden:
                return f"override '{self.overridden[prefix]}'", None
        for prefix in prefixes:
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


class _Limit(Exception):
    """A bound of the spec loader was exceeded at ``mark`` (turned into a located issue)."""

    def __init__(self, message: str, mark: yaml.Mark | None, hint: str = "") -> None:
        super().__init__(message)
        self.message, self.mark, self.hint = message, mark, hint


class _BadValue(ConstructorError):
    """A scalar that parses but cannot be a value (an int beyond 64 bits, ``!!int abc``)."""


class _SpecLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that bounds nesting and aliases while composing, refuses recursive
    aliases and out-of-range integers, and reports unconvertible scalars with their position.

    Composition is the only recursive step of PyYAML (scanner and parser are state machines),
    so bounding depth here keeps every later walk (ours, pydantic's) far from RecursionError.
    """

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._depth = 0
        self._open_anchors: list[str] = []
        #: (target node, mark of the ``*alias``, nesting depth where it is used), in order.
        self.alias_uses: list[tuple[yaml.Node, yaml.Mark, int]] = []

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            if event.anchor in self._open_anchors:
                raise _Limit(f"alias *{event.anchor} is used inside the value it names, which "
                             f"would make it infinitely deep", event.start_mark,
                             "an alias may only repeat a value defined before it")
            node = super().compose_node(parent, index)
            self.alias_uses.append((node, event.start_mark, self._depth))
            if len(self.alias_uses) > MAX_ALIASES:
                raise _Limit(f"more than {MAX_ALIASES} alias uses (*name) in one spec",
                             event.start_mark, "write the values out or use fewer aliases")
            return node
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _Limit(f"values are nested more than {MAX_DEPTH} levels deep",
                         event.start_mark, "a pipeline spec needs fewer than 10 levels")
        anchor = getattr(event, "anchor", None)
        collection = isinstance(event, yaml.CollectionStartEvent)
        if anchor is not None and collection:
            self._open_anchors.append(anchor)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1
            if anchor is not None and collection:
                self._open_anchors.pop()

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except yaml.MarkedYAMLError:
            raise
        except (ValueError, TypeError, OverflowError, ArithmeticError) as exc:
            value = node.value if isinstance(node, yaml.ScalarNode) else node.tag
            raise _BadValue(None, None, f"cannot read the value {short_repr(value)} as "
                                   f"{node.tag.rsplit(':', 1)[-1]}: {exc}",
                                   node.start_mark) from None

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:  # type: ignore[override]
        raw = str(self.construct_scalar(node))
        if len(raw) > _MAX_INT_LITERAL:
            raise _BadValue(None, None, f"integer literal of {len(raw)} characters does not "
                                   f"fit a signed 64-bit integer", node.start_mark)
        value = SafeConstructor.construct_yaml_int(self, node)
        if not INT64_MIN <= value <= INT64_MAX:
            raise _BadValue(None, None, f"integer {raw} does not fit a signed 64-bit "
                                   f"integer (at most {INT64_MAX})", node.start_mark)
        return value


_SpecLoader.add_constructor("tag:yaml.org,2002:int", _SpecLoader.construct_yaml_int)


def short_repr(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters (never fails, even for huge integers)."""
    try:
        text = repr(value)
    except ValueError:  # an int beyond the int-to-str limit
        return f"<integer of about {int(value.bit_length() * 0.30103) + 1} digits>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _check_expansion(root: yaml.Node, alias_uses: list[tuple[yaml.Node, yaml.Mark, int]]
                     ) -> None:
    """Refuse documents whose aliases expand too much or too deep (without expanding them).

    Sizes and depths of every node, aliases counted expanded, are computed once per node
    (memoised, iteratively: the graph is a DAG because recursive aliases were refused).
    """
    if not alias_uses:
        return  # without aliases, composing already bounded depth, and size is the file's
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in size:
            continue
        kids: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            kids = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            kids = [n for pair in node.value for n in pair]
        if children_done:
            size[id(node)] = 1 + sum(size[id(k)] for k in kids)
            depth[id(node)] = 1 + max((depth[id(k)] for k in kids), default=0)
        else:
            stack.append((node, True))
            stack.extend((k, False) for k in kids if id(k) not in size)
    total = 0
    for target, mark, used_at in alias_uses:
        if used_at + depth[id(target)] > MAX_DEPTH:
            raise _Limit(f"this alias nests values more than {MAX_DEPTH} levels deep once "
                         f"expanded", mark, "a pipeline spec needs fewer than 10 levels")
        total += size[id(target)]
        if total > MAX_ALIAS_VALUES:
            raise _Limit(f"aliases expand to more than {MAX_ALIAS_VALUES} values (this one alone "
                         f"to {size[id(target)]}); refusing a possible alias bomb",
                         mark, "write the values out, or repeat fewer and smaller values")


def _mark_issue(message: str, mark: yaml.Mark | None, file: str, hint: str = "") -> SpecIssue:
    return SpecIssue(message, file=file, line=mark.line + 1 if mark else None, hint=hint)


def _compose(text: str, file: str) -> tuple[_SpecLoader, yaml.Node | None]:
    """Compose ``text`` into a node graph within the loader's bounds (see the module docs)."""
    try:
        loader = _SpecLoader(text)
    except yaml.reader.ReaderError as exc:  # checked on the whole text up front
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        raise SpecError([SpecIssue(
            f"control character U+{exc.character:04X} at column {column} is not allowed in YAML",
            file=file, line=line, hint="remove it; a spec is plain UTF-8 text")]) from None
    try:
        node = loader.get_single_node()
        if node is not None:
            _check_expansion(node, loader.alias_uses)
    except _Limit as exc:
        loader.dispose()
        raise SpecError([_mark_issue(exc.message, exc.mark, file, exc.hint)]) from None
    except yaml.MarkedYAMLError as exc:
        loader.dispose()
        raise SpecError([_yaml_issue(exc, file)]) from None
    except yaml.YAMLError as exc:  # pragma: no cover - every PyYAML parse error is marked
        loader.dispose()
        raise SpecError([SpecIssue(f"invalid YAML: {exc}", file=file)]) from None
    return loader, node


def _yaml_issue(exc: yaml.MarkedYAMLError, file: str) -> SpecIssue:
    mark = exc.problem_mark or exc.context_mark
    text = exc.problem or exc.context or str(exc)
    if not isinstance(exc, _BadValue):  # a value we could not read is not a syntax error
        text = f"invalid YAML: {text}"
    return _mark_issue(text, mark, file)


def load_yaml(text: str, file: str) -> Located:
    """Parse YAML text; raise :class:`SpecError` with file:line on syntax errors and on any
    input beyond the loader's bounds (see the module docstring). Never raises anything else."""
    loader, node = _compose(text, file)
    try:
        if node is None:
            raise SpecError([SpecIssue("the spec is empty; expected a mapping with 'stages'",
                                       file=file, line=1)])
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        raise SpecError([_yaml_issue(exc, file)]) from None
    finally:
        loader.dispose()
    lines: dict[PathT, int] = {(): node.start_mark.line + 1}
    issues: list[SpecIssue] = []
    _walk(node, (), lines, issues, file)
    if issues:
        raise SpecError(issues)
    return Located(data=data, file=file, lines=lines)


def load_value(text: str, label: str) -> Any:
    """One YAML value (an override's ``VALUE``) within the same bounds as a spec file.

    Raises :class:`SpecError` whose issue is located at ``label`` (e.g. ``"override 'a=b'"``).
    """
    loader, node = _compose(text, label)
    try:
        return None if node is None else loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        raise SpecError([_yaml_issue(exc, label)]) from None
    finally:
        loader.dispose()


def decode_spec_bytes(data: bytes, file: str) -> str:
    """The text of a spec file's bytes; :class:`SpecError` (with the line when known) for a
    file that is not UTF-8 text: compressed or binary files, UTF-16/32, other encodings."""
    for magic, what in _BINARY_MAGIC:
        if data.startswith(magic):
            raise SpecError([SpecIssue(f"the file is {what}, not a YAML spec", file=file, line=1,
                                       hint="a spec must be UTF-8 text; decompress or re-save "
                                            "it as UTF-8")])
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]  # a UTF-8 byte order mark is allowed (YAML accepts it)
    nul = data.find(b"\x00")
    if nul >= 0:
        raise SpecError([SpecIssue("the file contains NUL bytes: it is binary, or UTF-16/32 "
                                   "text without a byte order mark", file=file,
                                   line=data.count(b"\n", 0, nul) + 1,
                                   hint="a spec must be UTF-8 text; re-save it as UTF-8")])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise SpecError([SpecIssue(
            f"the file is not UTF-8 text: byte 0x{data[exc.start]:02x} at column {column} "
            f"cannot be decoded", file=file, line=line,
            hint="re-save the file as UTF-8; it may be Latin-1 or another encoding")]) from None


def load_spec_file(path: str | Path) -> Located:
    """Read and parse a spec file. Every problem (missing, unreadable, not a regular file, too
    large, not UTF-8 text, bad YAML, beyond the loader's bounds) is a :class:`SpecError`."""
    path = Path(path)
    file = str(path)
    try:
        if not path.exists():
            raise SpecError([SpecIssue(f"spec file not found: {path}", file=file)])
        if not path.is_file():
            raise SpecError([SpecIssue(f"not a regular file: {path}", file=file,
                                       hint="give the path of a YAML spec file")])
        with path.open("rb") as fh:
            data = fh.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise SpecError([SpecIssue(f"cannot read the spec file: {exc.strerror or exc}",
                                   file=file)]) from None
    if len(data) > MAX_SPEC_BYTES:
        raise SpecError([SpecIssue(f"the file is larger than {MAX_SPEC_BYTES // 2**20} MiB; "
                                   f"a pipeline spec is a few KB", file=file,
                                   hint="is this the right file?")])
    return load_yaml(decode_spec_bytes(data, file), file)


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
        label = f"override {short_repr(item, 200)}"
        try:
            value = load_value(raw, label) if raw.strip() else ""
        except SpecError as exc:
            issues += [SpecIssue(i.message, file=label, hint=i.hint) for i in exc.issues]
            continue
        parts: list[Any] = key.split(".")
        if len(parts) > MAX_DEPTH:
            issues.append(SpecIssue(f"the key has {len(parts)} parts; at most {MAX_DEPTH}",
                                    file=label))
            continue
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
        # Only plain ASCII digits index a list ('²'.isdigit() is true, int('²') fails).
        path = [int(p) if isinstance(p, str) and p.isascii() and p.isdigit() and len(p) < 19
                else p for p in path]
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
