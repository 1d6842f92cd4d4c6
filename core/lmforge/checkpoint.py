"""Checkpoint service for resumable stages.

A checkpoint is a folder ``<stage_dir>/checkpoints/step-00000100/``. Whoever saves writes files
into its staging folder ``.step-00000100.tmp`` (several ranks may write there: a backend's
sharded model state, each rank's RNG state); :meth:`CheckpointStore.commit` then records the
size and sha256 of every file in ``checkpoint.json`` and renames the folder into place. So:

* a checkpoint without ``checkpoint.json`` never looks complete;
* before a resume, :meth:`CheckpointStore.latest_valid` re-hashes the newest checkpoint's files;
  a checkpoint whose bytes changed, that lost or gained a file, or whose ``checkpoint.json`` is
  missing or unreadable is reported by path (an :class:`lmforge.errors.IntegrityWarning`) and
  set aside (renamed ``bad-step-...``), and the previous valid one is used (or none: a fresh
  start). :meth:`CheckpointStore.load` verifies too: nothing is read from a checkpoint before
  its hashes match.

Nested state (e.g. ``optimizer.state_dict()``) is stored by :func:`write_state` as one
safetensors file of tensors plus a JSON skeleton (:func:`pack` / :func:`unpack`); nothing is
unpickled on load. Tuples come back as lists.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

_NAME = re.compile(r"^step-(\d{8})$")
_TENSOR = "__tensor__"
MARKER = "checkpoint.json"


@dataclass(frozen=True)
class Checkpoint:
    step: int
    path: Path


def pack(obj: Any, prefix: str = "") -> tuple[dict[str, torch.Tensor], Any]:
    """Split nested dicts/lists holding tensors into (flat tensors, JSON-able skeleton)."""
    import torch

    tensors: dict[str, torch.Tensor] = {}

    def walk(o: Any, key: str) -> Any:
        if isinstance(o, torch.Tensor):
            tensors[key] = o.detach().to("cpu").contiguous()
            return {_TENSOR: key}
        if isinstance(o, dict):
            return {"__dict__": [[k, walk(v, f"{key}/{k}")] for k, v in o.items()]}
        if isinstance(o, (list, tuple)):
            return [walk(v, f"{key}/{i}") for i, v in enumerate(o)]
        return o

    return tensors, walk(obj, prefix)


def unpack(tensors: dict[str, torch.Tensor], skeleton: Any) -> Any:
    """Inverse of :func:`pack` (dict keys keep their types: ints stay ints)."""
    if isinstance(skeleton, dict) and _TENSOR in skeleton:
        return tensors[skeleton[_TENSOR]]
    if isinstance(skeleton, dict) and "__dict__" in skeleton:
        return {k: unpack(tensors, v) for k, v in skeleton["__dict__"]}
    if isinstance(skeleton, list):
        return [unpack(tensors, v) for v in skeleton]
    return skeleton


def write_state(folder: Path, name: str, state: Any) -> None:
    """Store nested ``state`` as ``<name>.safetensors`` (its tensors) + ``<name>.json``."""
    from lmforge.fsutil import save_safetensors

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors, skeleton = pack(state)
    save_safetensors(tensors, folder / f"{name}.safetensors")
    with open(folder / f"{name}.json", "w", encoding="utf-8") as fh:
        json.dump(skeleton, fh)
        fh.flush()
        os.fsync(fh.fileno())


def read_state(folder: Path, name: str) -> Any:
    """Inverse of :func:`write_state`."""
    import safetensors.torch

    folder = Path(folder)
    tensors = safetensors.torch.load_file(str(folder / f"{name}.safetensors"))
    return unpack(tensors, json.loads((folder / f"{name}.json").read_text()))


class CheckpointStore:
    """Saves, verifies and finds the checkpoints of one stage; keeps the newest ``keep``.

    Single process: :meth:`save` / :meth:`load`. Several ranks: the main rank calls
    :meth:`begin`, every rank writes into :meth:`staging`, then the main rank calls
    :meth:`commit` (barriers between, see :class:`lmforge.training.loop.Trainer`).
    """

    def __init__(self, root: Path, keep: int = 2,
                 on_saved: Callable[[int, Path], None] | None = None) -> None:
        self.root = Path(root)
        self.keep = keep
        self._on_saved = on_saved
        self._verified: set[Path] = set()  # checked by this store since it was written or read

    def all(self) -> list[Checkpoint]:
        """Committed checkpoints, oldest first (not verified: see :meth:`latest_valid`)."""
        return [c for c in self._folders() if (c.path / MARKER).is_file()]

    def _folders(self) -> list[Checkpoint]:
        """Every ``step-XXXXXXXX`` folder, oldest first, with or without its marker (a folder
        without one was damaged after its commit, or written by an older lmforge)."""
        if not self.root.is_dir():
            return []
        found = []
        for p in self.root.iterdir():
            m = _NAME.match(p.name)
            if m and p.is_dir():
                found.append(Checkpoint(int(m.group(1)), p))
        return sorted(found, key=lambda c: c.step)

    def latest(self) -> Checkpoint | None:
        found = self.all()
        return found[-1] if found else None

    # -- writing -------------------------------------------------------------------------------
    def staging(self, step: int) -> Path:
        """The folder every rank writes checkpoint ``step`` into before :meth:`commit`."""
        return self.root / f".step-{step:08d}.tmp"

    def begin(self, step: int) -> Path:
        """(Main rank) an empty staging folder for ``step``."""
        tmp = self.staging(step)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        return tmp

    def commit(self, step: int) -> Path:
        """(Main rank) hash the staged files, mark the checkpoint complete, move it into place
        and drop all but the newest ``keep``."""
        from lmforge.fsutil import hash_files

        tmp, final = self.staging(step), self.root / f"step-{step:08d}"
        staged = [f for f in sorted(tmp.rglob("*")) if f.is_file()]
        files = {str(f.relative_to(tmp)): {"size": f.stat().st_size, "sha256": digest}
                 for f, digest in zip(staged, hash_files(staged))}
        with open(tmp / MARKER, "w", encoding="utf-8") as fh:
            json.dump({"step": step, "files": files}, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        self._verified.add(final)
        if self.keep > 0:  # older folders go, a marker-less leftover of a killed prune too
            oldest_kept = self.all()[-self.keep:][0].step
            for old in self._folders():
                if old.step < oldest_kept:
                    shutil.rmtree(old.path, ignore_errors=True)
        if self._on_saved:
            self._on_saved(step, final)
        return final

    def save(self, step: int, state: dict[str, Any]) -> Path:
        """Write nested ``state`` (tensors anywhere) as the checkpoint of ``step`` (one process)."""
        write_state(self.begin(step), "state", state)
        return self.commit(step)

    # -- reading -------------------------------------------------------------------------------
    def verify(self, checkpoint: Checkpoint) -> str | None:
        """What is wrong with ``checkpoint`` (a missing, resized, changed or unrecorded file, a
        missing or unreadable marker), or None when its files are exactly those hashed at
        commit."""
        from lmforge.fsutil import hash_files

        marker = checkpoint.path / MARKER
        if not marker.is_file():
            return f"{MARKER} is missing (the checkpoint was damaged, or written by an older " \
                   f"lmforge)"
        try:
            doc = json.loads(marker.read_text(encoding="utf-8"))
            files = {str(rel): (int(rec["size"]), str(rec["sha256"]))
                     for rel, rec in doc["files"].items()}
            step = int(doc["step"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            return f"{MARKER} is unreadable ({type(exc).__name__}: {exc})"
        if step != checkpoint.step:
            return f"{MARKER} is for step {step}, not {checkpoint.step}"
        on_disk = {str(f.relative_to(checkpoint.path)) for f in checkpoint.path.rglob("*")
                   if f.is_file()} - {MARKER}
        for rel in sorted(set(files) | on_disk):  # the cheap checks first
            if rel not in files:
                return f"{rel} was not written by the checkpoint"
            size = files[rel][0]
            f = checkpoint.path / rel
            if not f.is_file():
                return f"{rel} is missing"
            if f.stat().st_size != size:
                return f"{rel} has {f.stat().st_size} bytes, {size} were written"
        names = sorted(files)
        for rel, digest in zip(names, hash_files([checkpoint.path / r for r in names])):
            if digest != files[rel][1]:
                return f"{rel} does not match the sha256 recorded when it was written"
        return None

    def latest_valid(self) -> Checkpoint | None:
        """The newest checkpoint that passes :meth:`verify`. Each bad one met on the way is
        reported (an :class:`~lmforge.errors.IntegrityWarning` naming its path and the
        problem) and set aside as ``bad-step-...``, so it is never resumed from."""
        from lmforge.errors import IntegrityWarning

        for ckpt in reversed(self._folders()):
            problem = self.verify(ckpt)
            if problem is None:
                self._verified.add(ckpt.path)
                return ckpt
            aside = self._set_aside(ckpt)
            older = [c for c in self._folders() if c.step < ckpt.step]
            then = (f"falling back to the previous checkpoint ({older[-1].path.name})" if older
                    else "no earlier checkpoint: the stage starts over")
            warnings.warn(IntegrityWarning(
                f"checkpoint {ckpt.path} is corrupt: {problem}; it is not used (set aside as "
                f"{aside}), {then}"), stacklevel=2)
        return None

    def _set_aside(self, checkpoint: Checkpoint) -> Path:
        aside = checkpoint.path.with_name(f"bad-{checkpoint.path.name}")
        shutil.rmtree(aside, ignore_errors=True)
        os.replace(checkpoint.path, aside)
        self._verified.discard(checkpoint.path)
        return aside

    def load(self, checkpoint: Checkpoint | None = None) -> dict[str, Any]:
        """Load what :meth:`save` wrote: from ``checkpoint`` (verified first; a corrupt one is
        an error naming it), by default from :meth:`latest_valid`."""
        from lmforge.errors import LmforgeError

        if checkpoint is None:
            checkpoint = self.latest_valid()
            if checkpoint is None:
                raise FileNotFoundError(f"no valid checkpoint under {self.root}")
        elif checkpoint.path not in self._verified:
            problem = self.verify(checkpoint)
            if problem is not None:
                raise LmforgeError(f"checkpoint {checkpoint.path} is corrupt: {problem}; it was "
                                   f"not loaded (use latest_valid() to fall back to a valid one)")
            self._verified.add(checkpoint.path)
        return read_state(checkpoint.path, "state")

    def clear(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        self._verified.clear()
