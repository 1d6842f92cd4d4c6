"""Do a module's names resolve? A static check with :mod:`symtable` (no code runs).

A name resolves when it is bound in its own or an enclosing function scope, at module level
(assignment, ``def``, ``class``, ``import``, ``global`` assignment anywhere), or is a builtin or
module dunder. An ``import`` resolves when its top-level module is in the standard library or a
module the program defines next to itself (``local_modules``): the sandbox has nothing else.
A ``from m import *`` makes every unbound name unknowable: the check then passes.
"""

from __future__ import annotations

import ast
import builtins
import symtable
import sys
from collections.abc import Iterable

_DUNDERS = {"__name__", "__file__", "__doc__", "__builtins__", "__spec__", "__loader__",
            "__package__", "__annotations__", "__dict__", "__module__", "__qualname__",
            "__class__", "__debug__"}
_BUILTINS = set(dir(builtins)) | _DUNDERS


def _module_bindings(top: symtable.SymbolTable, tree: ast.Module) -> set[str]:
    bound = {s.get_name() for s in top.get_symbols()
             if s.is_assigned() or s.is_imported() or s.is_namespace() or s.is_parameter()}
    # ``global x; x = 1`` inside a function binds module-level x
    for node in ast.walk(tree):
        if isinstance(node, ast.Global):
            bound.update(node.names)
    return bound


def _tables(table: symtable.SymbolTable) -> Iterable[symtable.SymbolTable]:
    yield table
    for child in table.get_children():
        yield from _tables(child)


def undefined_names(code: str, tree: ast.Module | None = None) -> list[str]:
    """Names ``code`` reads that nothing binds (sorted); ``[]`` if it has a star import.
    ``code`` must parse (a ``SyntaxError`` otherwise)."""
    tree = tree or ast.parse(code)
    if any(isinstance(n, ast.ImportFrom) and any(a.name == "*" for a in n.names)
           for n in ast.walk(tree)):
        return []
    top = symtable.symtable(code, "<completion>", "exec")
    module_bound = _module_bindings(top, tree)
    missing: set[str] = set()
    for table in _tables(top):
        for sym in table.get_symbols():
            if not sym.is_referenced():
                continue
            name = sym.get_name()
            if table.get_type() == "module" or sym.is_global():
                if name not in module_bound and name not in _BUILTINS:
                    missing.add(name)
            elif table.get_type() == "class" and not (sym.is_assigned() or sym.is_imported()
                                                     or sym.is_namespace()):
                # class bodies read unbound names from the module
                if name not in module_bound and name not in _BUILTINS and not sym.is_free():
                    missing.add(name)
    return sorted(missing)


def unresolved_imports(tree: ast.Module, local_modules: Iterable[str] = ()) -> list[str]:
    """Top-level modules imported by ``tree`` that are neither in the standard library nor in
    ``local_modules`` (sorted)."""
    known = set(sys.stdlib_module_names) | set(local_modules) | {"__future__"}
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return sorted(found - known)


def defines(tree: ast.Module, name: str) -> bool:
    """Whether the module defines function (or class) ``name`` at top level."""
    return any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
               and n.name == name for n in tree.body)
