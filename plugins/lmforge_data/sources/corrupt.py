"""Deterministic, plausible-but-wrong corruptions of a Python function (preference 'rejected').

:func:`corrupt` takes the source of one function (a ``def`` at column 0) and a seeded
``random.Random`` and returns a variant that still parses but behaves differently, made by one
of three kinds of edit, each keeping the original formatting everywhere else:

* ``operator``: flip one operator or literal in the body (``<`` -> ``>=``, ``==`` -> ``!=``,
  ``+`` -> ``-``, ``and`` -> ``or``, ``True`` -> ``False``, ``is`` -> ``is not``,
  ``min`` -> ``max``, integer ``n`` -> ``n + 1`` ...);
* ``arguments``: swap the first two positional arguments of a call, or the operands of a
  non-commutative operator (``a - b`` -> ``b - a``);
* ``swap``: swap two adjacent one-line statements where the second reads a name the first
  writes (so the order matters);
* ``drop``: remove one one-line statement with an effect (``total += x``, ``out.append(x)``,
  ``s = s.strip()``);
* ``name``: replace one read of a local variable or parameter with a common identifier the
  function never defines or mentions (a ``NameError`` waiting to happen — the kind of slip a
  model that tracks its context can learn to avoid).

The kind is drawn first among those possible, then the site. ``None`` when nothing applies.
"""

from __future__ import annotations

import ast
import io
import random
import tokenize
from collections.abc import Callable

OP_FLIPS = {"<": ">=", ">": "<=", "<=": ">", ">=": "<", "==": "!=", "!=": "==", "+": "-",
            "-": "+", "+=": "-=", "-=": "+=", "//": "/", "%": "//"}
NAME_FLIPS = {"and": "or", "or": "and", "True": "False", "False": "True", "min": "max",
              "max": "min", "any": "all", "all": "any"}
_SIMPLE = (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Expr, ast.Return, ast.Delete,
           ast.Raise, ast.Assert, ast.Pass, ast.Break, ast.Continue, ast.Global, ast.Nonlocal,
           ast.Import, ast.ImportFrom)
_BLOCK_FIELDS = ("body", "orelse", "finalbody")

Edit = Callable[[list[str]], list[str]]


KINDS = ("operator", "arguments", "swap", "drop", "name")
#: Identifiers a wrong variable is drawn from (only those the function does not mention).
NAME_POOL = ("data", "result", "value", "item", "items", "obj", "name", "text", "key", "args",
             "path", "node", "line", "index", "count", "size", "buf", "tmp", "other", "params")


def corrupt(code: str, rng: random.Random, kinds: tuple[str, ...] = KINDS
            ) -> tuple[str, str] | None:
    """A corrupted variant of ``code`` and the kind of edit, or ``None`` if none applies.

    ``kinds`` limits the edits to those kinds (see the module docstring).
    """
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return None
    if not tree.body or not isinstance(tree.body[0], (ast.FunctionDef, ast.AsyncFunctionDef)):
        return None
    func = tree.body[0]
    lines = code.splitlines(keepends=True)
    body_start = func.body[0].lineno
    candidates = {"operator": _operator_edits(code, body_start),
                  "arguments": _argument_edits(func, lines),
                  "swap": _swap_edits(func), "drop": _drop_edits(func),
                  "name": _name_edits(func, lines, rng)}
    kinds = [k for k in KINDS if k in kinds and candidates[k]]
    original = ast.dump(tree)
    while kinds:
        kind = rng.choice(kinds)
        edits = candidates[kind]
        rng.shuffle(edits)
        for edit in edits:
            new = "".join(edit(list(lines)))
            try:
                if ast.dump(ast.parse(new)) != original:
                    return new, kind
            except SyntaxError:
                continue
        kinds.remove(kind)
    return None


def _operator_edits(code: str, body_start: int) -> list[Edit]:
    edits: list[Edit] = []
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(code).readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return edits
    for i, tok in enumerate(tokens):
        if tok.start[0] < body_start:
            continue
        new: str | None = None
        if tok.type == tokenize.OP and tok.string in OP_FLIPS:
            if tok.string == "%" and i and tokens[i - 1].type == tokenize.STRING:
                continue  # '%s' % x is formatting, not arithmetic
            new = OP_FLIPS[tok.string]
        elif tok.type == tokenize.NAME and tok.string in NAME_FLIPS:
            new = NAME_FLIPS[tok.string]
        elif tok.type == tokenize.NAME and tok.string == "is":
            nxt = tokens[i + 1] if i + 1 < len(tokens) else None
            if nxt is not None and nxt.string != "not":
                new = "is not"
        elif tok.type == tokenize.NUMBER and tok.string.isdigit() and len(tok.string) < 6:
            new = str(int(tok.string) + 1)
        if new is not None and tok.start[0] == tok.end[0]:
            edits.append(_replace(tok.start, tok.end, new))
    return edits


def _name_edits(func: ast.FunctionDef | ast.AsyncFunctionDef, lines: list[str],
                rng: random.Random) -> list[Edit]:
    a = func.args
    params = [x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs) if x.arg not in
              ("self", "cls")] + [x.arg for x in (a.vararg, a.kwarg) if x is not None]
    mentioned = {n.id for n in ast.walk(func) if isinstance(n, ast.Name)}
    mentioned |= {n.attr for n in ast.walk(func) if isinstance(n, ast.Attribute)}
    mentioned |= {x.arg for x in ast.walk(a) if isinstance(x, ast.arg)}
    local = set(params) | {n.id for n in ast.walk(func)
                           if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    pool = [n for n in NAME_POOL if n not in mentioned]
    if not pool:
        return []
    edits: list[Edit] = []
    for stmt in func.body:
        for n in ast.walk(stmt):
            if (isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load) and n.id in local
                    and n.end_lineno == n.lineno):
                line = lines[n.lineno - 1].encode("utf-8")
                start = len(line[:n.col_offset].decode("utf-8", "replace"))
                end = len(line[:n.end_col_offset].decode("utf-8", "replace"))
                edits.append(_replace((n.lineno, start), (n.lineno, end), rng.choice(pool)))
    return edits


def _replace(start: tuple[int, int], end: tuple[int, int], new: str) -> Edit:
    def edit(lines: list[str]) -> list[str]:
        row = start[0] - 1
        line = lines[row]
        lines[row] = line[:start[1]] + new + line[end[1]:]
        return lines
    return edit


def _blocks(func: ast.AST) -> list[list[ast.stmt]]:
    out = []
    for node in ast.walk(func):
        for name in _BLOCK_FIELDS:
            block = getattr(node, name, None)
            if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
                out.append(block)
        for handler in getattr(node, "handlers", []) or []:
            out.append(handler.body)
    return out


def _one_line(stmt: ast.stmt) -> bool:
    return isinstance(stmt, _SIMPLE) and stmt.lineno == stmt.end_lineno


def _stored(stmt: ast.stmt) -> set[str]:
    targets: list[ast.AST] = []
    if isinstance(stmt, ast.Assign):
        targets = list(stmt.targets)
    elif isinstance(stmt, (ast.AugAssign, ast.AnnAssign)):
        targets = [stmt.target]
    names = set()
    for t in targets:
        for n in ast.walk(t):
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
                names.add(n.id)
    return names


def _loaded(stmt: ast.stmt) -> set[str]:
    return {n.id for n in ast.walk(stmt) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def _swap_edits(func: ast.AST) -> list[Edit]:
    edits: list[Edit] = []
    for block in _blocks(func):
        for a, b in zip(block, block[1:]):
            if not (_one_line(a) and _one_line(b)) or a.col_offset != b.col_offset:
                continue
            flow = (ast.Return, ast.Raise, ast.Break, ast.Continue, ast.Pass)
            if isinstance(a, flow) or isinstance(b, flow):
                continue  # code after a return would look dead, not subtly wrong
            if _stored(a) & _loaded(b):
                edits.append(_swap(a.lineno - 1, b.lineno - 1))
    return edits


def _swap(i: int, j: int) -> Edit:
    def edit(lines: list[str]) -> list[str]:
        lines[i], lines[j] = _with_eol(lines[j], lines[i]), _with_eol(lines[i], lines[j])
        return lines
    return edit


def _with_eol(line: str, like: str) -> str:
    """``line`` with the line ending of ``like`` (the last line may have none)."""
    body = line.rstrip("\r\n")
    return body + like[len(like.rstrip("\r\n")):]


def _drop_edits(func: ast.AST) -> list[Edit]:
    edits: list[Edit] = []
    for block in _blocks(func):
        if len(block) < 2:
            continue
        for stmt in block:
            if not _one_line(stmt):
                continue
            effect = (isinstance(stmt, ast.AugAssign)
                      or (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call))
                      or (isinstance(stmt, ast.Assign)
                          and (_stored(stmt) & _loaded(stmt)
                               or any(isinstance(t, (ast.Attribute, ast.Subscript))
                                      for t in stmt.targets))))
            if effect:
                edits.append(_drop(stmt.lineno - 1))
    return edits


def _drop(i: int) -> Edit:
    def edit(lines: list[str]) -> list[str]:
        del lines[i]
        return lines
    return edit


_NON_COMMUTATIVE = (ast.Sub, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.LShift, ast.RShift,
                    ast.MatMult)


def _argument_edits(func: ast.FunctionDef | ast.AsyncFunctionDef, lines: list[str]
                    ) -> list[Edit]:
    edits: list[Edit] = []
    for stmt in func.body:
        for node in ast.walk(stmt):
            pair: tuple[ast.expr, ast.expr] | None = None
            if isinstance(node, ast.Call) and len(node.args) >= 2:
                pair = (node.args[0], node.args[1])
            elif isinstance(node, ast.BinOp) and isinstance(node.op, _NON_COMMUTATIVE):
                formatting = isinstance(node.op, ast.Mod) and (
                    isinstance(node.left, ast.JoinedStr)
                    or (isinstance(node.left, ast.Constant) and isinstance(node.left.value, str)))
                if not formatting:
                    pair = (node.left, node.right)
            if pair is None or any(isinstance(x, ast.Starred) for x in pair):
                continue
            a, b = pair
            if not (a.lineno == a.end_lineno == b.lineno == b.end_lineno):
                continue
            line = lines[a.lineno - 1]
            raw = line.encode("utf-8")
            cut = [len(raw[:off].decode("utf-8", "replace")) for off in
                   (a.col_offset, a.end_col_offset, b.col_offset, b.end_col_offset)]
            left, right = line[cut[0]:cut[1]], line[cut[2]:cut[3]]
            if left != right:
                edits.append(_swap_spans(a.lineno - 1, cut, left, right))
    return edits


def _swap_spans(row: int, cut: list[int], left: str, right: str) -> Edit:
    def edit(lines: list[str]) -> list[str]:
        line = lines[row]
        lines[row] = line[:cut[0]] + right + line[cut[1]:cut[2]] + left + line[cut[3]:]
        return lines
    return edit
