"""Atomic writes and content hashing: a partial file is never taken as complete."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file in the same folder, fsync, then rename."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_replace_dir(tmp_dir: Path, final_dir: Path) -> None:
    """Move a fully written ``tmp_dir`` to ``final_dir``, replacing any previous version."""
    final_dir = Path(final_dir)
    if final_dir.exists():
        trash = final_dir.with_name(f".{final_dir.name}.old")
        shutil.rmtree(trash, ignore_errors=True)
        os.replace(final_dir, trash)
        os.replace(tmp_dir, final_dir)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp_dir, final_dir)


def hash_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_hashes(path: Path) -> dict[str, tuple[int, str]]:
    """``{relative path: (size, sha256)}`` of every file under ``path``, sorted; hidden temp
    files (a path part starting with ``.``) are ignored."""
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(path).parts))
    return {str(f.relative_to(path)): (f.stat().st_size, hash_file(f)) for f in files}


def combine_hashes(files: dict[str, tuple[int, str]]) -> str:
    """The folder hash of :func:`hash_dir` from :func:`file_hashes` output."""
    h = hashlib.sha256()
    for rel, (_, digest) in sorted(files.items()):
        h.update(rel.encode())
        h.update(b"\0")
        h.update(digest.encode())
        h.update(b"\n")
    return h.hexdigest()


def hash_dir(path: Path) -> str:
    """Content hash of a folder: sha256 over (relative path, file hash) of every file, sorted.

    Hidden temp files (names starting with ``.``) are ignored.
    """
    return combine_hashes(file_hashes(path))
