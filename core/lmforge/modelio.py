"""The ``model`` artifact format, shared by every stage and backend that writes or reads a model.

A model artifact folder holds:

* the weights under canonical **Hugging Face names** (the architecture's ``to_hf`` adapter
  converts on save, ``from_hf`` on load; an architecture without a Hugging Face counterpart
  has no adapter and stores its own parameter names): ``model.safetensors``, or, above ``max_shard_size``,
  ``model-00001-of-0000N.safetensors`` ... plus ``model.safetensors.index.json`` (the
  ``transformers`` layout). Loaded without unpickling anything;
* ``model.json`` — ``{"architecture": {"type": <component name>, ...its config}, "vocab_size":
  N, "format": "hf-names", "lmforge_version": ...}``: enough to rebuild the module through the
  installed architecture component, whichever plugin provides it.

Because the names are canonical, a model trained by any backend (local, DDP, FSDP2, Megatron)
loads on any other, export to ``transformers`` is writing ``config.json`` and copying, and an
existing Hugging Face checkpoint can be imported as a model artifact.

Torch and safetensors are imported inside the functions: this module is safe to import anywhere.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
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
WEIGHTS_INDEX = "model.safetensors.index.json"
MODEL_JSON = "model.json"
FORMAT = "hf-names"
#: Shard size above which weights are split into several files (the transformers default).
DEFAULT_MAX_SHARD_SIZE = 5 * 2**30


# -- raw HF-named weights ------------------------------------------------------------------------
def weight_files(path: Path) -> list[Path]:
    """The safetensors files of a weights folder (one file, or the shards its index names)."""
    path = Path(path)
    index = path / WEIGHTS_INDEX
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        files = [path / n for n in names]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise StageInputError(f"{index} names shard files that are missing: {missing[:3]}")
        return files
    if (path / WEIGHTS).is_file():
        return [path / WEIGHTS]
    raise StageInputError(f"{path} holds no weights: neither {WEIGHTS} nor {WEIGHTS_INDEX}")


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a weights folder (single file or sharded), on CPU."""
    import safetensors.torch

    out: dict[str, torch.Tensor] = {}
    for file in weight_files(path):
        out.update(safetensors.torch.load_file(str(file), device="cpu"))
    return out


def write_weights(path: Path, tensors: Mapping[str, torch.Tensor],
                  max_shard_size: int = DEFAULT_MAX_SHARD_SIZE,
                  dtype: torch.dtype | None = None) -> list[str]:
    """Write ``tensors`` into folder ``path`` in the transformers layout (sharded with an index
    above ``max_shard_size`` bytes); each file is written under a temporary name and renamed.
    Returns the file names written."""
    from huggingface_hub import split_torch_state_dict_into_shards

    from lmforge.fsutil import save_safetensors

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    split = split_torch_state_dict_into_shards(dict(tensors), max_shard_size=max_shard_size,
                                               filename_pattern="model{suffix}.safetensors")
    for filename, names in split.filename_to_tensors.items():
        # clone: adapter outputs may be views of one fused tensor, which safetensors refuses
        shard = {n: tensors[n].detach().to("cpu", dtype).contiguous().clone() for n in names}
        tmp = path / f".{filename}.tmp"
        save_safetensors(shard, tmp, metadata={"format": "pt"})
        tmp.replace(path / filename)
    written = list(split.filename_to_tensors)
    if split.is_sharded:
        atomic_write_text(path / WEIGHTS_INDEX, json.dumps(
            {"metadata": dict(split.metadata), "weight_map": split.tensor_to_filename},
            indent=2, sort_keys=True) + "\n")
        written.append(WEIGHTS_INDEX)
    return written


# -- model artifacts -----------------------------------------------------------------------------
class _Identity:
    """The adapter of an architecture whose own names are already its canonical names."""

    @staticmethod
    def to_hf(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return dict(state_dict)

    from_hf = to_hf


def _adapter(architecture: Config) -> Any:
    """The architecture's state-dict adapter (``to_hf`` / ``from_hf``); an architecture without
    one (no Hugging Face counterpart) stores its own parameter names."""
    if callable(getattr(architecture, "to_hf", None)) and callable(
            getattr(architecture, "from_hf", None)):
        return architecture
    return _Identity


def save_model(path: Path, state_dict: Mapping[str, torch.Tensor], architecture: Config,
               vocab_size: int, *, max_shard_size: int = DEFAULT_MAX_SHARD_SIZE) -> None:
    """Write a model artifact: ``state_dict`` (the architecture's own names, any device) is
    converted to HF names through ``architecture.to_hf`` and stored with ``model.json``."""
    hf = _adapter(architecture).to_hf(state_dict)
    write_weights(path, hf, max_shard_size)
    atomic_write_text(Path(path) / MODEL_JSON, json.dumps({
        "architecture": architecture.model_dump(mode="json"),
        "vocab_size": int(vocab_size),
        "format": FORMAT,
        "lmforge_version": __version__,
    }, indent=2))


def read_model_json(path: Path) -> dict[str, Any]:
    file = Path(path) / MODEL_JSON
    if not file.is_file():
        raise StageInputError(f"{path} is not an lmforge model artifact: {MODEL_JSON} is missing")
    meta = json.loads(file.read_text())
    if meta.get("format") != FORMAT:
        raise StageInputError(
            f"{file}: model artifact format {meta.get('format')!r} is not {FORMAT!r} (weights "
            f"under Hugging Face names); it was written by an older lmforge — rerun the stage "
            f"that produced it (lmforge run --force <stage>)")
    return meta


def architecture_config(path: Path, plugins: PluginManager) -> Config:
    """The validated architecture config stored with a model artifact."""
    arch = read_model_json(path)["architecture"]
    model = plugins.component_config_model("architecture", arch["type"])
    return model.model_validate(arch)


def load_state_dict(path: Path, plugins: PluginManager
                    ) -> tuple[Config, int, dict[str, torch.Tensor]]:
    """``(architecture config, vocab_size, state dict under the architecture's names)`` of a
    model artifact, on CPU."""
    path = Path(path)
    config = architecture_config(path, plugins)
    vocab = int(read_model_json(path)["vocab_size"])
    try:
        state = _adapter(config).from_hf(read_weights(path))
    except ValueError as exc:
        raise StageInputError(f"{path}: {exc}") from None
    return config, vocab, state


def build_module(architecture: Config, vocab_size: int, plugins: PluginManager) -> Any:
    """A freshly initialised module of ``architecture`` (on torch's current default device)."""
    component = plugins.get_component("architecture", architecture.type)  # type: ignore[attr-defined]
    return component.load_factory()(architecture, vocab_size=vocab_size)


def load_into(module: torch.nn.Module, state: Mapping[str, torch.Tensor], where: str) -> None:
    """``module.load_state_dict(state)`` with a clear error naming ``where`` on a mismatch."""
    missing, unexpected = module.load_state_dict(dict(state), strict=False)
    if missing or unexpected:
        raise StageInputError(f"weights in {where} do not match the module: missing "
                              f"{list(missing)[:5]}, unexpected {list(unexpected)[:5]}")


def load_model(path: Path, plugins: PluginManager, device: Any = "cpu",
               dtype: torch.dtype | None = None) -> torch.nn.Module:
    """Rebuild the module stored at ``path`` with the installed architecture component."""
    config, vocab, state = load_state_dict(path, plugins)
    model = build_module(config, vocab, plugins)
    load_into(model, state, str(path))
    model = model.to(device=device)
    if dtype is not None:
        model = model.to(dtype=dtype)
    return model


def with_head(architecture: Config, head: str, where: str = "") -> Config:
    """``architecture`` with output head ``head`` (``"lm"`` or ``"score"``, see
    :class:`lmforge.interfaces.CausalLMOutput`) through its config's ``with_head``; an
    architecture without one supports only the LM head (a :class:`StageInputError`)."""
    if getattr(architecture, "head", "lm") == head:
        return architecture
    change = getattr(architecture, "with_head", None)
    if not callable(change):
        raise StageInputError(
            f"{where or 'model'}: architecture {getattr(architecture, 'type', '?')!r} has no "
            f"{head!r} head (its config has no with_head()); use an architecture that does, "
            f"such as 'dense' or 'moe'")
    return change(head)


@dataclass(frozen=True)
class ModelRecipe:
    """*What* model a stage trains or evaluates; the backend decides how and where to build it.

    ``construct()`` builds a freshly initialised module on torch's current default device (a
    backend may call it under ``torch.device("meta")``); ``weights`` is a model artifact whose
    weights replace the fresh initialisation; ``seed`` seeds torch before a fresh CPU build, so
    every backend starts from the same weights.

    ``weights_architecture``, when set, is the architecture the ``weights`` were saved with and
    differs from ``architecture`` only in its output head (a reward or value model started from
    a language model: :meth:`from_artifact` with ``head="score"``). Then the artifact's body
    initialises the module, the artifact's old head is dropped and the new head keeps its
    seeded fresh initialisation — the same on every backend, since :meth:`initial_state`
    returns the complete state dict.
    """

    architecture: Config
    vocab_size: int
    construct: Callable[[], Any]
    weights: Path | None = None
    seed: int = 0
    weights_architecture: Config | None = None

    @classmethod
    def fresh(cls, architecture: Config, vocab_size: int, plugins: PluginManager,
              seed: int) -> ModelRecipe:
        return cls(architecture, vocab_size,
                   lambda: build_module(architecture, vocab_size, plugins), None, seed)

    @classmethod
    def from_artifact(cls, path: Path, plugins: PluginManager, seed: int = 0,
                      head: str | None = None) -> ModelRecipe:
        """The model stored at ``path``; with ``head`` (e.g. ``"score"``) that model with its
        output head replaced by a fresh, ``seed``-initialised one of that kind (unchanged when
        the artifact already has it)."""
        saved = architecture_config(path, plugins)
        config = saved if head is None else with_head(saved, head, str(path))
        vocab = int(read_model_json(path)["vocab_size"])
        return cls(config, vocab, lambda: build_module(config, vocab, plugins), Path(path),
                   seed, None if config is saved else saved)

    def _seeded(self) -> torch.nn.Module:
        import torch

        with torch.device("cpu"):
            torch.manual_seed(self.seed)
            return self.construct()

    def _artifact_state(self) -> dict[str, torch.Tensor]:
        try:
            return _adapter(self.weights_architecture or self.architecture).from_hf(
                read_weights(self.weights))  # type: ignore[arg-type]
        except ValueError as exc:
            raise StageInputError(f"{self.weights}: {exc}") from None

    def _merge(self, fresh: Mapping[str, torch.Tensor], saved: Mapping[str, torch.Tensor]
               ) -> dict[str, torch.Tensor]:
        """Head change: every parameter the artifact has (same name and shape), the new head's
        fresh values; the artifact's old head is dropped."""
        out = dict(fresh)
        for name, tensor in saved.items():
            if name in out:
                if tuple(out[name].shape) != tuple(tensor.shape):
                    raise StageInputError(f"{self.weights}: {name} has shape "
                                          f"{tuple(tensor.shape)}, the model expects "
                                          f"{tuple(out[name].shape)}")
                out[name] = tensor
        return out

    def initial_state(self) -> dict[str, torch.Tensor] | None:
        """The artifact's state dict (architecture names, CPU), or None for a fresh init. After
        a head change it is complete: the artifact's body and the seeded fresh head."""
        if self.weights is None:
            return None
        saved = self._artifact_state()
        if self.weights_architecture is None:
            return saved
        return self._merge(self._seeded().state_dict(), saved)

    def build_full(self) -> torch.nn.Module:
        """The whole module on CPU in fp32: seeded construction, then the artifact's weights."""
        model = self._seeded()
        if self.weights is None:
            return model
        saved = self._artifact_state()
        if self.weights_architecture is not None:
            saved = self._merge(model.state_dict(), saved)
        load_into(model, saved, str(self.weights))
        return model
