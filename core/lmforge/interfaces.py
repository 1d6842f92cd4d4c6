"""Protocols for non-stage components, so plugins interoperate through the core only.

A plugin never imports another plugin: a training stage builds an architecture with
``ctx.build("architecture", config.model, vocab_size=...)`` and relies only on the protocol
below; a data stage runs any installed ``filter`` the same way. Torch types are named only for
type checkers; nothing here imports torch.

Factory signatures by component kind (``ctx.build(kind, config, ...)`` calls them):

==============  =====================================================  =====================
kind            factory call                                           returns
==============  =====================================================  =====================
architecture    ``factory(config, vocab_size: int)``                   :class:`CausalLM`
                (the config implements :class:`ArchitectureConfig`)
backend         ``factory(config)``                                    :class:`Backend`
source          ``factory(config)``                                    :class:`Source`
filter          ``factory(config)``                                    :class:`Filter`
tracker         ``factory(config, run_dir: Path)``                     a pluggy plugin object
evaluator       ``factory(config)``                                    see :mod:`lmforge.evaluation`
generator       ``factory(config, model_dir, tokenizer, plugins)``     see :mod:`lmforge.generators`
==============  =====================================================  =====================
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch


# --- models ------------------------------------------------------------------------------
@dataclass
class CausalLMOutput:
    """What ``CausalLM.forward`` returns. Which fields are set depends on the call:

    * ``labels`` given: ``loss_sum`` — float32 scalar, cross-entropy summed over positions whose
      label is not ``-100`` — and ``num_tokens``, the scalar count of those positions; computed
      chunk-wise, the full ``[B, T, V]`` logits never exist;
    * ``labels`` and ``return_logprobs=True``: ``token_logprobs`` — float32 ``[B, T]``,
      ``log p(labels[b, t])``, 0 at ignored positions (for DPO, PPO, reward scoring);
    * no ``labels``: ``logits`` ``[B, T', V]`` of the last ``logits_to_keep`` positions
      (all when ``None``), e.g. ``logits_to_keep=1`` for generation;
    * a model built with a *score head* (architecture config ``head: score``; reward and
      value models) has no vocabulary projection: it returns ``scores``, float32 ``[B, T']``,
      one scalar per position of the last ``logits_to_keep`` positions (all when ``None``);
      ``labels`` are an error. A sequence's score is the one at its last real token.

    ``aux_losses`` maps a name (``load_balancing``, ``router_z``) to a scalar already scaled by
    its coefficient; training adds their sum (:attr:`aux_loss`) to the per-token mean loss.
    They are values returned from the call, never state kept on the module.
    """

    loss_sum: torch.Tensor | None = None
    num_tokens: torch.Tensor | None = None
    token_logprobs: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    scores: torch.Tensor | None = None
    aux_losses: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def aux_loss(self) -> torch.Tensor | float:
        """Sum of :attr:`aux_losses` (0.0 when there are none)."""
        return sum(self.aux_losses.values()) if self.aux_losses else 0.0


@runtime_checkable
class CausalLM(Protocol):
    """A decoder-only language model (a ``torch.nn.Module``): the model-call contract.

    Every loss, log-prob and generation step calls the module — as the backend returned it,
    wrapped in DDP, sharded by FSDP2 or compiled — and never a method of the unwrapped model:
    under DDP that would skip the gradient all-reduce, under FSDP2 the parameter all-gather.

    ``forward(input_ids, *, labels=None, positions=None, attention_mask=None,
    return_logprobs=False, logits_to_keep=None) -> CausalLMOutput``:

    * ``input_ids``: LongTensor ``[B, T]``, ``T <= max_seq_len``; position ``t`` predicts the
      token after it, and ``labels[b, t]`` (already shifted by the caller) is that target;
    * ``positions``: LongTensor ``[B, T]`` of rotary positions; default ``0 .. T-1``, or, with
      an ``attention_mask``, the count of real tokens before each position (left padding);
    * ``attention_mask``: ``[B, T]``, 1 for real tokens and 0 for padding (keys that are
      padding are never attended to). Without it attention is plain causal;
    * see :class:`CausalLMOutput` for what comes back.

    *Incremental decoding* (optional; :mod:`lmforge.generation` uses it when present, else it
    recomputes the whole sequence each step): ``init_cache(batch_size, max_len, dtype=None)``
    returns an empty key/value cache, and ``forward(new_ids, attention_mask=..., cache=cache,
    logits_to_keep=1)`` appends the new tokens to it and attends over everything cached;
    ``attention_mask`` then covers the new tokens only and positions continue each row's count
    of real tokens. Optionally ``cache.select(rows)`` keeps only those batch rows (generation
    drops finished rows with it). See docs/plugins/generation.md.

    ``blocks`` is the ``ModuleList`` of repeated transformer blocks: backends shard (FSDP2) and
    checkpoint activations per block. ``init_buffers()`` recomputes non-persistent buffers
    (rotary tables) in place; backends call it after materialising a model built on the meta
    device.
    """

    vocab_size: int
    max_seq_len: int
    blocks: Any

    def forward(self, input_ids: torch.Tensor, *, labels: torch.Tensor | None = None,
                positions: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, return_logprobs: bool = False,
                logits_to_keep: int | None = None) -> CausalLMOutput: ...

    def init_buffers(self) -> None: ...


@dataclass(frozen=True)
class TransformerShape:
    """The neutral description of a decoder-only transformer: what a backend that builds the
    model itself (Megatron-Core's ``GPTModel``) needs to know, without the architecture's code.

    It describes a Llama-family decoder: pre-norm blocks ``x + attn(norm(x))`` then
    ``x + mlp(norm(x))``, a final norm and an output projection (tied to the token embedding
    when ``tie_embeddings``), no biases, no dropout, rotary positions in the Hugging Face Llama
    convention (``rotate_half`` over the two halves of each head, base ``rope_theta``),
    grouped-query attention with ``n_kv_heads`` key/value heads, ``activation`` ``"swiglu"``
    (``silu(gate) * up``) and ``norm`` ``"rmsnorm"`` (``x / sqrt(mean(x^2) + norm_eps) * w``).

    ``n_experts > 0`` makes every block's MLP a mixture of ``n_experts`` SwiGLU experts of
    hidden size ``ffn_hidden``: a linear router without bias, softmax over all experts, the
    ``top_k`` most probable kept and renormalised to sum to 1. ``router_aux_loss_coef``
    weighs the Switch load-balancing loss ``n_experts * sum_e f_e * P_e`` (``f_e``: fraction
    of the ``tokens * top_k`` assignments routed to ``e``; ``P_e``: mean router probability of
    ``e``) averaged over layers; ``router_z_loss_coef`` the layer-averaged mean squared
    log-sum-exp of the router logits. Both are added to the per-token mean loss in training.

    ``head`` is ``"lm"`` (the output projection to the vocabulary) or ``"score"``: a
    ``Linear(dim, 1, bias=False)`` in its place, named ``score.weight`` (reward and value
    models; ``transformers``' ``LlamaForSequenceClassification`` with one label). A backend
    that cannot build a score head must refuse ``head != "lm"`` rather than build an LM head.

    An architecture that describes itself this way promises that its state-dict adapter
    (``to_hf`` / ``from_hf``) uses the parameter names of ``transformers``'
    ``LlamaForCausalLM`` (``n_experts == 0``) or ``MixtralForCausalLM`` (``n_experts > 0``):
    that is how a backend moves weights between the architecture and its own layout.
    """

    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn_hidden: int
    max_seq_len: int
    norm_eps: float
    rope_theta: float
    tie_embeddings: bool
    init_std: float = 0.02
    activation: str = "swiglu"
    norm: str = "rmsnorm"
    n_experts: int = 0
    top_k: int = 0
    router_aux_loss_coef: float = 0.0
    router_z_loss_coef: float = 0.0
    head: str = "lm"

    @property
    def is_moe(self) -> bool:
        return self.n_experts > 0


@runtime_checkable
class ArchitectureConfig(Protocol):
    """What an ``architecture`` component's config provides besides the module it builds.

    The architecture owns *what* the model is; a backend decides how to build, shard and save
    it. All of this works on configs and state dicts, without building a module:

    * ``max_seq_len``, ``num_parameters(vocab_size)``, ``flops_per_token(seq_len, vocab_size)``;
    * the state-dict adapter to canonical Hugging Face names: ``to_hf(state_dict)`` and
      ``from_hf(hf_state_dict)`` (tensors in, tensors out; a round trip is the identity), used
      by every backend when it writes or reads a ``model`` artifact;
    * ``hf_config(vocab_size)``: the ``config.json`` of the matching ``transformers`` model;
    * the class attribute ``hf_model_types`` (e.g. ``("llama",)``) and the classmethod
      ``from_hf_config(config_json)``: how an existing Hugging Face model is imported;
    * ``transformer()``: the neutral :class:`TransformerShape` of the model, for backends that
      build it themselves (Megatron-Core). An architecture that cannot be described that way
      may leave it out; such a backend then refuses it with a clear error;
    * optional ``head`` (``"lm"`` | ``"score"``) and ``with_head(head) -> config``: the same
      architecture with the other output head (see :class:`CausalLMOutput`); what
      :meth:`lmforge.modelio.ModelRecipe.from_artifact` uses to start a reward or value model
      from a language model's artifact. An architecture without them has only an LM head.
    """

    type: str
    max_seq_len: int
    hf_model_types: tuple[str, ...]

    def num_parameters(self, vocab_size: int, non_embedding: bool = False) -> int: ...

    def to_hf(self, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]: ...

    def from_hf(self, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]: ...

    def hf_config(self, vocab_size: int) -> dict[str, Any]: ...

    def transformer(self) -> TransformerShape: ...


# --- execution backends ------------------------------------------------------------------
class Backend(Protocol):
    """Where and how training runs. The backend owns how a model is built, placed, sharded,
    stepped and saved; a stage says *what* to build (a :class:`lmforge.modelio.ModelRecipe`)
    and calls the returned module.

    Collective methods (marked so) must be called by every rank of the world.

    Optional, for backends that split the model itself over ranks (Megatron-Core):

    * ``dp_rank`` / ``dp_size``: this process's data-parallel coordinates. Batches, evaluation
      shares and the data order are functions of ``(seed, step, dp_rank)``; model-parallel
      peers (tensor-, context-, pipeline-parallel ranks) share a ``dp_rank`` and read the same
      batch (:func:`lmforge.training.loop.data_parallel`). Default: ``(rank, world_size)``.
    * ``train_step(module, optimizer, loss_fn, micro_batches, max_norm) -> (loss_sum, count,
      metric_sums, input_tokens, grad_norm)``: collective; one whole optimizer step — forward
      and backward of every micro-batch (``loss_fn(module, batch)``, a
      :class:`lmforge.training.loop.LossFn`), gradient reduction and division by the step's
      total count over all data-parallel ranks, clipping to ``max_norm`` (0: none), the
      optimizer's step and zeroing of gradients. The returned sums are this rank's
      data-parallel share (equal on its model-parallel peers; the trainer averages them over
      all ranks). Without it the trainer runs the step through ``no_sync`` and
      ``clip_grad_norm_``.
    """

    device: torch.device
    rank: int
    world_size: int
    precision: str  # "fp32" | "bf16"

    @property
    def is_main(self) -> bool: ...

    def build_model(self, recipe: Any) -> torch.nn.Module:
        """Collective. Build the recipe's model — fresh (seeded) or from its weights — place it,
        wrap or shard it; returns the module to call (see :class:`CausalLM`)."""
        ...

    def build_optimizer(self, module: torch.nn.Module, optim: Any) -> torch.optim.Optimizer:
        """AdamW over ``module``'s parameters as :class:`lmforge.training.config.OptimConfig`
        says (decay groups, betas, eps)."""
        ...

    def no_sync(self, module: torch.nn.Module) -> AbstractContextManager[Any]:
        """Context for the forward/backward of a micro-batch that is not the step's last:
        gradients accumulate locally without cross-rank communication."""
        ...

    def clip_grad_norm_(self, module: torch.nn.Module, max_norm: float) -> float:
        """Collective. Clip the global gradient norm (over all ranks and shards); return the
        norm before clipping. ``max_norm=inf`` only measures it."""
        ...

    def autocast(self) -> AbstractContextManager[Any]:
        """Context for forward passes (bf16 autocast where the backend uses it)."""
        ...

    def save_checkpoint(self, path: Path, module: torch.nn.Module,
                        optimizer: torch.optim.Optimizer | None) -> None:
        """Collective. Write the model and optimizer state under folder ``path`` (created by
        the caller, private to the stage)."""
        ...

    def load_checkpoint(self, path: Path, module: torch.nn.Module,
                        optimizer: torch.optim.Optimizer | None) -> None:
        """Collective. Restore what :meth:`save_checkpoint` wrote (same world size)."""
        ...

    def full_state_dict(self, module: torch.nn.Module) -> dict[str, torch.Tensor] | None:
        """Collective. The whole model's state dict (architecture names, fp32, CPU) on the
        main rank — gathered from the shards where sharded; ``None`` on other ranks."""
        ...

    def all_reduce_mean(self, value: float) -> float:
        """Collective. Mean of a scalar across ranks (identity on one process)."""
        ...

    def barrier(self) -> None: ...

    def close(self) -> None: ...

    def describe(self) -> str:
        """One line for logs: device, precision, world size, sharding."""
        ...


# --- data ------------------------------------------------------------------------------------
class Source(Protocol):
    """A stream of records (dicts). Must not load a corpus larger than memory at once."""

    def __iter__(self) -> Iterator[dict[str, Any]]: ...

    def describe(self) -> str:
        """Where the records come from (shown in errors and stats)."""
        ...


@dataclass(frozen=True)
class FilterResult:
    """A filter's decision on one document.

    ``keep=False`` drops the document, ``reason`` says why (counted in the stage manifest).
    ``text`` set to a new string means the document was modified (e.g. PII redacted), with
    ``reason`` naming what changed. ``metadata`` adds facts to the record's metadata; a filter
    that returns metadata says so with a class attribute ``emits_metadata = True``, and the
    data stage then gives its output a ``metadata`` column (JSON per record).
    """

    keep: bool
    reason: str = ""
    text: str | None = None
    counts: Mapping[str, int] | None = None  # e.g. {"email": 2} for a redaction
    #: Facts about the document worth keeping with it (``{"language": "de", "language_score":
    #: 0.97}``): JSON values, merged over the chain and stored in the record's ``metadata``.
    metadata: Mapping[str, Any] | None = None

    @classmethod
    def kept(cls) -> FilterResult:
        return _KEPT


_KEPT = FilterResult(keep=True)


class Filter(Protocol):
    """Decides on one document's text. Must be picklable (filters run in worker processes)."""

    name: str

    def __call__(self, text: str) -> FilterResult: ...
