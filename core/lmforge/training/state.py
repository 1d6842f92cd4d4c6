"""A registry of the stateful things a stage checkpoints, saved and restored together.

A stage registers, once, everything its resumed run must get back:

* **models** (:meth:`StateRegistry.add_model`): a module as its backend returned it and, when
  trained, its optimizer; the backend writes and reads them (safetensors, DCP, Megatron's
  ``dist_checkpointing``), collectively, in the checkpoint folder itself (``folder=""``, the
  layout of the supervised trainer) or a sub-folder of it (``"policy"``, ``"value"``);
* **values** (:meth:`StateRegistry.add`): any object with ``state_dict()`` /
  ``load_state_dict(state)`` — nested dicts/lists of numbers, strings and tensors, the same on
  every rank (a schedule position, a KL controller, running reward statistics, the trainer's
  counters); the main rank stores them as ``<name>.json`` + ``<name>.safetensors``;
* the **RNG state of every rank** (torch, CUDA, Python, NumPy), always, as ``rng-rank<r>``.

:meth:`StateRegistry.save` writes a checkpoint through ``ctx.checkpoints`` (staging folder,
hashes, atomic rename; collective), :meth:`StateRegistry.resume` restores the newest one that
passes its hash check, values first (in registration order, so a value may refuse a
checkpoint — a different world size, other data — before any weights load), then models, then
RNG. A checkpoint lacking a registered value or model is refused with its path.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from lmforge import dist
from lmforge.checkpoint import read_state, write_state
from lmforge.errors import StageInputError

if TYPE_CHECKING:
    from lmforge.interfaces import Backend
    from lmforge.stages import StageContext


class Stateful(Protocol):
    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any) -> None: ...


# -- RNG state ----------------------------------------------------------------------------------
def capture_rng() -> dict[str, Any]:
    """Every RNG the loop (and dropout, sampling) may draw from, as checkpointable state."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
        "numpy": {"name": np_state[0], "keys": [int(x) for x in np_state[1]],
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                  "cached_gaussian": float(np_state[4])},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"].to(torch.uint8))
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))
    n = state["numpy"]
    np.random.set_state((n["name"], np.array(n["keys"], dtype=np.uint32), n["pos"],
                         n["has_gauss"], n["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@dataclass
class _Model:
    module: torch.nn.Module
    optimizer: torch.optim.Optimizer | None
    folder: str


class StateRegistry:
    """What one stage checkpoints (see the module docstring).

    Args:
        ctx: the stage context (its ``checkpoints`` store).
        backend: the backend that built the registered models.
    """

    def __init__(self, ctx: StageContext, backend: Backend) -> None:
        self.ctx, self.backend = ctx, backend
        self._models: dict[str, _Model] = {}
        self._values: dict[str, Stateful] = {}

    def add_model(self, name: str, module: torch.nn.Module,
                  optimizer: torch.optim.Optimizer | None = None, folder: str = "") -> None:
        """Register a model (and its optimizer) the backend saves under ``folder`` of the
        checkpoint (``""``: the checkpoint folder itself; at most one model may use it)."""
        if name in self._models or name in self._values:
            raise ValueError(f"{name!r} is registered twice")
        if any(m.folder == folder for m in self._models.values()):
            raise ValueError(f"two models would be saved in the same folder {folder!r}")
        self._models[name] = _Model(module, optimizer, folder)

    def add(self, name: str, obj: Stateful) -> None:
        """Register a value stored by the main rank as ``<name>.json`` (+ tensors)."""
        if name in self._models or name in self._values or name.startswith("rng-rank"):
            raise ValueError(f"{name!r} is registered twice or is reserved")
        self._values[name] = obj

    def save(self, step: int) -> Path:
        """Collective: write checkpoint ``step`` (every rank its part, the main rank commits
        it: hashes, atomic rename). Returns its folder."""
        be, store = self.backend, self.ctx.checkpoints
        if be.is_main:
            store.begin(step)
        dist.barrier()
        folder = store.staging(step)
        for m in self._models.values():
            sub = folder / m.folder if m.folder else folder
            sub.mkdir(parents=True, exist_ok=True)
            be.save_checkpoint(sub, m.module, m.optimizer)
        write_state(folder, f"rng-rank{be.rank}", capture_rng())
        if be.is_main:
            for name, obj in self._values.items():
                write_state(folder, name, obj.state_dict())
        dist.barrier()
        if be.is_main:
            store.commit(step)
        dist.barrier()
        return store.root / f"step-{step:08d}"

    def resume(self) -> Path | None:
        """When the stage resumes, restore the newest checkpoint that passes its hash check on
        every rank (collective) and return its folder; None when there is none (a fresh
        start) or the stage does not resume."""
        if not self.ctx.resumed:
            return None
        store = self.ctx.checkpoints
        path = dist.main_decides(lambda: getattr(store.latest_valid(), "path", None))
        if path is None:
            return None
        path = Path(path)
        for name, obj in self._values.items():
            if not (path / f"{name}.json").is_file():
                raise StageInputError(
                    f"stage {self.ctx.stage_id!r}: checkpoint {path} has no {name!r} state "
                    f"(written by another version of this stage?); rerun with --force "
                    f"{self.ctx.stage_id}")
            obj.load_state_dict(read_state(path, name))
        for m in self._models.values():
            self.backend.load_checkpoint(path / m.folder if m.folder else path, m.module,
                                         m.optimizer)
        rng = path / f"rng-rank{self.backend.rank}.json"
        if rng.is_file():
            restore_rng(read_state(path, f"rng-rank{self.backend.rank}"))
        return path


class StateOf:
    """A :class:`Stateful` from two functions (for state kept in attributes of a stage)."""

    def __init__(self, get: Any, put: Any) -> None:
        self._get, self._put = get, put

    def state_dict(self) -> Any:
        return self._get()

    def load_state_dict(self, state: Any) -> None:
        self._put(state)
