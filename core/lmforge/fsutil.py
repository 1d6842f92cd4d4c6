"""Atomic writes and content hashing: a partial file is never taken as complete."""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file in the same folder, fsync, then rename."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a hidden temp file in the same folder, fsync, then rename:
    readers see the old file or the new one, never a part. The file's mode is what a plain
    ``open(path, "w")`` gives (0666 less the umask), not ``tempfile.mkstemp``'s 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _create_temp(path: Path) -> tuple[int, str]:
    """Create ``.<name>.<random>.tmp`` next to ``path`` exclusively, with mode 0666 so that
    the kernel applies the umask (as for any new file); return (fd, its path)."""
    for _ in range(100):
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                           0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temp file next to {path}")  # pragma: no cover


def current_umask() -> int:
    """The process umask, read without changing it where the system allows (Linux
    ``/proc/self/status``); elsewhere set and restored at once."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def honour_umask(path: Path) -> None:
    """Give a file written by a library that creates it 0600 (``safetensors.save_file``) the
    mode any new file gets: 0666 less the umask."""
    os.chmod(path, 0o666 & ~current_umask())


def save_safetensors(tensors: Mapping[str, Any], path: Path,
                     metadata: Mapping[str, str] | None = None) -> None:
    """``safetensors.torch.save_file`` with the file's mode following the umask (save_file
    itself writes 0600). Imports torch: call it only where tensors are saved."""
    import safetensors.torch

    safetensors.torch.save_file(dict(tensors), str(path),
                                metadata=dict(metadata) if metadata is not None else None)
    honour_umask(Path(path))


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


#: From this many bytes in all, :func:`hash_files` hashes files on several threads.
PARALLEL_HASH_BYTES = 64 << 20


def hash_files(paths: Sequence[Path]) -> list[str]:
    """sha256 of each of ``paths``, in order; several large files at once (hashlib releases the
    GIL on large blocks: a checkpoint of many shards hashes on several cores)."""
    if len(paths) < 2 or sum(os.stat(p).st_size for p in paths) < PARALLEL_HASH_BYTES:
        return [hash_file(p) for p in paths]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(8, len(paths), os.cpu_count() or 1)) as pool:
        return list(pool.map(hash_file, paths))


def file_hashes(path: Path, known: Mapping[str, tuple[int, str]] | None = None
                ) -> dict[str, tuple[int, str]]:
    """``{relative path: (size, sha256)}`` of every file under ``path``, sorted; hidden temp
    files (a path part starting with ``.``) are ignored. ``known``: hashes taken while the
    files were written (relative path -> (size, sha256)); such a file is not re-read when its
    size still matches."""
    path = Path(path)
    known = known or {}
    files = sorted(p for p in path.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(path).parts))
    out: dict[str, tuple[int, str]] = {}
    todo = []
    for f in files:
        rel, size = str(f.relative_to(path)), f.stat().st_size
        if rel in known and known[rel][0] == size:
            out[rel] = (size, known[rel][1])
        else:
            todo.append(f)
    for f, d in zip(todo, hash_files(todo)):
        out[str(f.relative_to(path))] = (f.stat().st_size, d)
    return dict(sorted(out.items()))


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
