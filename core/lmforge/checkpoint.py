"""Checkpoint service for resumable stages.

A checkpoint is a folder ``<stage_dir>/checkpoints/step-00000100/`` holding ``tensors.safetensors``
(every tensor of the state: model, optimizer moments, RNG states) and ``state.json`` (everything
else: step, scheduler, data position, the nesting of the tensors). It is written under a temporary
name and renamed when complete, so :meth:`CheckpointStore.latest` never returns a partial one.
Nothing is unpickled on load: tensors come from safetensors, the rest from JSON.

Nested state (e.g. ``optimizer.state_dict()``) goes through :func:`pack` / :func:`unpack`, which
split it into a flat ``{name: tensor}`` dict and a JSON skeleton. Tuples come back as lists.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

_NAME = re.compile(r"^step-(\d{8})$")
_TENSOR = "__tensor__"


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


class CheckpointStore:
    """Saves and finds the checkpoints of one stage; keeps the newest ``keep``."""

    def __init__(self, root: Path, keep: int = 2,
                 on_saved: Callable[[int, Path], None] | None = None) -> None:
        self.root = Path(root)
        self.keep = keep
        self._on_saved = on_saved

    def all(self) -> list[Checkpoint]:
        if not self.root.is_dir():
            return []
        found = []
        for p in self.root.iterdir():
            m = _NAME.match(p.name)
            if m and p.is_dir() and (p / "state.json").is_file():
                found.append(Checkpoint(int(m.group(1)), p))
        return sorted(found, key=lambda c: c.step)

    def latest(self) -> Checkpoint | None:
        found = self.all()
        return found[-1] if found else None

    def save(self, step: int, state: dict[str, Any]) -> Path:
        """Write ``state`` (nested; tensors anywhere) as the checkpoint of ``step``."""
        import safetensors.torch

        tensors, skeleton = pack(state)
        final = self.root / f"step-{step:08d}"
        tmp = self.root / f".step-{step:08d}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        safetensors.torch.save_file(tensors, str(tmp / "tensors.safetensors"))
        with open(tmp / "state.json", "w", encoding="utf-8") as fh:
            json.dump({"step": step, "state": skeleton}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in self.all()[:-self.keep] if self.keep > 0 else []:
            shutil.rmtree(old.path, ignore_errors=True)
        if self._on_saved:
            self._on_saved(step, final)
        return final

    def load(self, checkpoint: Checkpoint | None = None) -> dict[str, Any]:
        """Load a checkpoint (the latest by default) back into nested state."""
        import safetensors.torch

        checkpoint = checkpoint or self.latest()
        if checkpoint is None:
            raise FileNotFoundError(f"no checkpoint under {self.root}")
        tensors = safetensors.torch.load_file(str(checkpoint.path / "tensors.safetensors"))
        skeleton = json.loads((checkpoint.path / "state.json").read_text())["state"]
        return unpack(tensors, skeleton)

    def clear(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
