"""The ``model`` artifact format, shared by every stage that writes or reads a model.

A model artifact folder holds:

* ``model.safetensors`` — the weights (``safetensors.torch.save_model``, so tied weights are
  stored once); loaded without unpickling anything;
* ``model.json`` — ``{"architecture": {"type": <component name>, ...its config}, "vocab_size": N,
  "lmforge_version": ...}``: enough to rebuild the module through the installed architecture
  component, whichever plugin provides it.

Torch and safetensors are imported inside the functions: this module is safe to import anywhere.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmforge._version import __version__
from lmforge.errors import StageInputError
from lmforge.fsutil import atomic_write_text

if TYPE_CHECKING:
    import torch

    from lmforge.components import Config
    from lmforge.plugins import PluginManager

WEIGHTS = "model.safetensors"
MODEL_JSON = "model.json"


def save_model(path: Path, model: torch.nn.Module, architecture: Config, vocab_size: int) -> None:
    """Write ``model`` (unwrapped, any device) and its architecture config to folder ``path``."""
    import safetensors.torch

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tmp = path / f".{WEIGHTS}.tmp"
    safetensors.torch.save_model(model, str(tmp))
    tmp.replace(path / WEIGHTS)
    atomic_write_text(path / MODEL_JSON, json.dumps({
        "architecture": architecture.model_dump(mode="json"),
        "vocab_size": int(vocab_size),
        "lmforge_version": __version__,
    }, indent=2))


def read_model_json(path: Path) -> dict[str, Any]:
    file = Path(path) / MODEL_JSON
    if not file.is_file():
        raise StageInputError(f"{path} is not an lmforge model artifact: {MODEL_JSON} is missing")
    return json.loads(file.read_text())


def architecture_config(path: Path, plugins: PluginManager) -> Config:
    """The validated architecture config stored with a model artifact."""
    meta = read_model_json(path)
    arch = meta["architecture"]
    model = plugins.component_config_model("architecture", arch["type"])
    return model.model_validate(arch)


def load_model(path: Path, plugins: PluginManager, device: Any = "cpu",
               dtype: torch.dtype | None = None) -> torch.nn.Module:
    """Rebuild the module stored at ``path`` with the installed architecture component."""
    import safetensors.torch

    path = Path(path)
    meta = read_model_json(path)
    config = architecture_config(path, plugins)
    component = plugins.get_component("architecture", config.type)  # type: ignore[attr-defined]
    model = component.load_factory()(config, vocab_size=meta["vocab_size"])
    missing, unexpected = safetensors.torch.load_model(model, str(path / WEIGHTS), strict=False,
                                                       device="cpu")
    if missing or unexpected:
        raise StageInputError(f"weights in {path / WEIGHTS} do not match architecture "
                              f"{config.type!r}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model = model.to(device=device)
    if dtype is not None:
        model = model.to(dtype=dtype)
    return model
