"""The ``generator`` component kind: an engine that continues token-id prompts (public API).

Everything that generates — evaluators, rollouts, AI feedback, ``lmforge serve`` — can do it
through :func:`lmforge.generation.generate` on a module it holds, or through a *generator*: an
object built from a ``model`` artifact that owns its own copy of the weights and its own engine.
The first-party ``builtin`` generator is :class:`BuiltinGenerator` (lmforge's own service); an
external engine (the ``vllm`` generator of the ``generators`` plugin) plugs in behind the same
protocol.

A component of kind ``generator`` is built as
``factory(config, model_dir: Path, tokenizer: TokenizerArtifact, plugins: PluginManager)``
(:func:`build_generator` does it) and returns a :class:`Generator`:

* ``generate(prompts, params, stop_check=None) -> list[Completion]`` — the contract of
  :func:`lmforge.generation.generate`: one :class:`~lmforge.generation.Completion` per
  (prompt, sample), in that order, ``token_ids`` without the stop token, one log-prob per
  token, ``finish_reason`` ``"stop"`` or ``"length"``; ``stop_check`` (see
  :data:`lmforge.generation.StopCheck`) may end rows early, and an engine that cannot call it
  while generating calls it on the finished rows (the caller trims either way);
* ``max_seq_len`` — the model's context (prompt + completion tokens);
* ``describe() -> str`` — one line for logs; ``close()`` — free the engine.

A generator is called from one thread at a time (the server serialises its calls).

Nothing here imports torch at module level.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from lmforge.errors import StageInputError

if TYPE_CHECKING:
    from lmforge.chat import TokenizerArtifact
    from lmforge.components import Config
    from lmforge.generation import Completion, SamplingParams, StopCheck
    from lmforge.plugins import PluginManager

__all__ = ["DTYPES", "BuiltinGenerator", "Generator", "build_generator", "resolve_device"]

#: Parameter dtypes a generator may load a model in.
DTYPES = ("float32", "bfloat16", "float16")


@runtime_checkable
class Generator(Protocol):
    """See the module docstring."""

    max_seq_len: int

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams,
                 stop_check: StopCheck | None = None) -> list[Completion]: ...

    def describe(self) -> str: ...

    def close(self) -> None: ...


def resolve_device(name: str) -> Any:
    """``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` as a
    ``torch.device``; a clear error for a device this machine does not have."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise StageInputError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise StageInputError(f"device {name!r} was asked for but CUDA is not available on this "
                              f"machine; use --device cpu (or auto)")
    return device


class BuiltinGenerator:
    """lmforge's own generation service (:func:`lmforge.generation.generate`: batched, KV
    cache, left padding) on a module in memory.

    ``module``: a :class:`lmforge.interfaces.CausalLM` on ``device``; ``pad_id``: the
    tokenizer's padding id; ``batch_size``: rows per forward (a call with more prompts runs
    several batches).
    """

    def __init__(self, module: Any, *, pad_id: int, device: Any, batch_size: int = 16,
                 label: str = "") -> None:
        self.module = module
        self.pad_id = int(pad_id)
        self.device = device
        self.batch_size = int(batch_size)
        self.max_seq_len = int(module.max_seq_len)
        self.label = label

    @classmethod
    def from_artifact(cls, model_dir: Path, tokenizer: TokenizerArtifact,
                      plugins: PluginManager, *, device: str = "auto",
                      dtype: str = "float32", batch_size: int = 16) -> BuiltinGenerator:
        """Load the ``model`` artifact ``model_dir`` (through its architecture component) on
        ``device`` (see :func:`resolve_device`) in ``dtype`` (one of :data:`DTYPES`)."""
        import torch

        from lmforge.modelio import load_model, read_model_json

        if dtype not in DTYPES:
            raise StageInputError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
        meta = read_model_json(model_dir)
        vocab = int(meta["vocab_size"])
        n_tok = tokenizer.tokenizer.get_vocab_size()
        if n_tok > vocab:
            raise StageInputError(
                f"tokenizer {tokenizer.path} has {n_tok} tokens but the model in {model_dir} has "
                f"vocab_size {vocab}; use the tokenizer the model was trained with")
        dev = resolve_device(device)
        model = load_model(Path(model_dir), plugins, device=dev, dtype=getattr(torch, dtype))
        model.eval()
        if getattr(getattr(model, "config", None), "head", "lm") == "score":
            raise StageInputError(f"{model_dir} is a score model (head: score): it rates text "
                                  f"but cannot generate it")
        arch = meta["architecture"].get("type", "?")
        return cls(model, pad_id=tokenizer.pad_id, device=dev, batch_size=batch_size,
                   label=f"builtin: {arch} model {model_dir} on {dev} in {dtype}")

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams,
                 stop_check: StopCheck | None = None) -> list[Completion]:
        import torch

        from lmforge.generation import generate

        with torch.inference_mode():
            return generate(self.module, prompts, params, pad_id=self.pad_id,
                            device=self.device, batch_size=self.batch_size,
                            stop_check=stop_check)

    def describe(self) -> str:
        return self.label or f"builtin generator on {self.device}"

    def close(self) -> None:
        self.module = None


def build_generator(plugins: PluginManager, config: Config, model_dir: Path,
                    tokenizer: TokenizerArtifact) -> Generator:
    """Build the ``generator`` component ``config`` selects (its ``type``) for the model
    artifact ``model_dir``; checks that what comes back implements :class:`Generator`."""
    name = config.type  # type: ignore[attr-defined]
    component = plugins.get_component("generator", name)
    generator = component.load_factory()(config, Path(model_dir), tokenizer, plugins)
    if not isinstance(generator, Generator):
        raise TypeError(f"generator {name!r} (plugin {component.plugin!r}) returned "
                        f"{type(generator).__name__}, which lacks generate/max_seq_len/"
                        f"describe/close")
    return generator
