"""Resolving a source's ``path`` (file, glob or list of them) to a sorted list of files."""

from __future__ import annotations

import functools
import glob
import os
import re
import sysconfig
from collections.abc import Sequence
from pathlib import Path

from lmforge import StageInputError
from lmforge.curation import Partition
from lmforge.specpath import RELATIVE_HINT

_GLOB_CHARS = set("*?[")


def as_list(path: str | Sequence[str]) -> list[str]:
    return [path] if isinstance(path, str) else list(path)


def substitute(pattern: str) -> str:
    """Expand ``~`` and the ``{stdlib}`` placeholder (the running Python's standard library)."""
    if "{stdlib}" in pattern:
        pattern = pattern.replace("{stdlib}", sysconfig.get_paths()["stdlib"])
    return os.path.expanduser(pattern)


def is_glob(pattern: str) -> bool:
    return any(c in pattern for c in _GLOB_CHARS)


def glob_base(pattern: str) -> str:
    """The folder part of ``pattern`` before its first glob character (its parent if none)."""
    parts = Path(pattern).parts
    fixed: list[str] = []
    for part in parts:
        if is_glob(part):
            break
        fixed.append(part)
    if len(fixed) == len(parts):
        fixed = fixed[:-1]
    return str(Path(*fixed)) if fixed else "."


@functools.lru_cache(maxsize=256)
def _exclude_regex(pattern: str) -> re.Pattern[str]:
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def excluded(relative: str, patterns: Sequence[str]) -> bool:
    """Whether ``relative`` (a path below its glob's base) matches an exclude pattern.

    ``*`` and ``?`` stay within one folder name, ``**`` spans folders; the path is matched
    with a leading ``/`` so ``**/tests/**`` also matches a top-level ``tests`` folder.
    """
    path = "/" + relative.lstrip("/")
    return any(_exclude_regex(p).match(path) for p in patterns)


def _looked_for(raw: str, resolved: str) -> str:
    return "" if resolved == raw else f" (looked for {resolved})"


def expand(path: str | Sequence[str], exclude: Sequence[str] = ()) -> list[Path]:
    """Files matched by ``path`` (sorted, de-duplicated), minus those matching ``exclude``.

    Exclude patterns (see :func:`excluded`) apply to the path below the pattern's fixed folder,
    so where the corpus lives does not matter. Raises :class:`StageInputError` naming the
    pattern when a plain path does not exist or a glob matches no file.
    """
    out: list[Path] = []
    seen: set[str] = set()
    for raw in as_list(path):
        pattern = substitute(raw)
        if is_glob(pattern):
            matches = sorted(glob.glob(pattern, recursive=True))
            files = [m for m in matches if os.path.isfile(m)]
            if not files:
                raise StageInputError(f"glob {raw!r} matches no file"
                                      f"{_looked_for(raw, pattern)}; check the path ("
                                      f"{RELATIVE_HINT})")
        else:
            if not os.path.exists(pattern):
                raise StageInputError(f"file {raw!r} does not exist"
                                      f"{_looked_for(raw, os.path.abspath(pattern))}; fix the "
                                      f"path ({RELATIVE_HINT})")
            if os.path.isdir(pattern):
                raise StageInputError(f"{raw!r} is a folder, not a file; use a glob such as "
                                      f"'{raw.rstrip('/')}/**/*.<ext>'")
            files = [pattern]
        base = glob_base(pattern)
        for f in files:
            posix = Path(f).as_posix()
            if posix in seen or (exclude and excluded(os.path.relpath(f, base).replace(
                    os.sep, "/"), exclude)):
                continue
            seen.add(posix)
            out.append(Path(f))
    if not out:
        raise StageInputError(f"every file matched by {as_list(path)} is excluded by "
                              f"{list(exclude)}; adjust 'exclude'")
    return out


def group_files(files: Sequence[Path], target_bytes: int) -> list[Partition]:
    """Consecutive ``files`` grouped into partitions of about ``target_bytes`` (a larger file
    is a partition alone). A partition's key names its files with their sizes and
    modification times, so a changed input changes the key; ``data`` is the list of paths."""
    out: list[Partition] = []
    group: list[tuple[str, os.stat_result]] = []
    size = 0

    def flush() -> None:
        key = ";".join(f"{p}:{st.st_size}:{st.st_mtime_ns}" for p, st in group)
        out.append(Partition(key, [p for p, _ in group], size))

    for f in files:
        st = os.stat(f)
        if group and size + st.st_size > target_bytes:
            flush()
            group, size = [], 0
        group.append((str(f), st))
        size += st.st_size
    if group:
        flush()
    return out
