"""Config of the ``dense`` architecture, with exact parameter and FLOP counts (light: no torch)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, model_validator

from lmforge import Config
from lmforge.interfaces import TransformerShape

if TYPE_CHECKING:
    import torch


#: Upper bounds of the sizes, far above any trained model (Llama 3 405B: dim 16384, 126 layers,
#: 128 heads, ffn 53248): a value beyond them is a typo, and would only fail when allocating.
MAX_DIM, MAX_LAYERS, MAX_HEADS, MAX_FFN_HIDDEN = 2**16, 1024, 1024, 2**20
MAX_SEQ_LEN, MAX_EXPERTS = 2**20, 1024
#: Most parameters (without the embedding) of a config: 10 trillion, 5x the largest models
#: trained, whose weights alone would take 20 TB in bf16.
MAX_PARAMETERS = 10**13


def llama_ffn_hidden(dim: int, multiple_of: int) -> int:
    """The Llama rule: ``2/3 * 4 * dim`` rounded up to a multiple of ``multiple_of``."""
    hidden = int(2 * (4 * dim) / 3)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


class DenseConfig(Config):
    """A Llama-family decoder-only transformer."""

    type: Literal["dense"] = Field(default="dense", description="Selects this architecture.")
    dim: int = Field(default=256, ge=8, le=MAX_DIM, description="Model width (hidden size).")
    n_layers: int = Field(default=4, ge=1, le=MAX_LAYERS,
                          description="Number of transformer blocks.")
    n_heads: int = Field(default=8, ge=1, le=MAX_HEADS,
                         description="Attention (query) heads; must divide dim.")
    n_kv_heads: int | None = Field(
        default=None, ge=1, le=MAX_HEADS, description="Key/value heads for grouped-query "
        "attention; must "
        "divide n_heads. Default: n_heads (plain multi-head attention).")
    ffn_hidden: int | None = Field(
        default=None, ge=1, le=MAX_FFN_HIDDEN, description="SwiGLU hidden size. Default: 2/3 * "
        "4 * dim rounded up to multiple_of (the Llama rule).")
    multiple_of: int = Field(default=256, ge=1, le=MAX_DIM,
                             description="Rounding of the default ffn_hidden.")
    max_seq_len: int = Field(default=1024, ge=1, le=MAX_SEQ_LEN,
                             description="Longest sequence the model accepts (rotary table size).")
    rope_theta: float = Field(default=10000.0, gt=0, description="Rotary embedding base.")
    norm_eps: float = Field(default=1e-5, gt=0, description="RMSNorm epsilon.")
    tie_embeddings: bool = Field(default=False, description="Share the token embedding matrix "
                                 "with the output projection.")
    init_std: float = Field(default=0.02, gt=0,
                            description="Std of the normal init of every weight matrix.")
    dropout: float = Field(default=0.0, ge=0.0, le=0.0,
                           description="Dropout probability (only 0 is supported).")
    head: Literal["lm", "score"] = Field(
        default="lm", description="Output head. 'lm': the vocabulary projection (a language "
        "model: logits, losses, log-probs). 'score': one scalar per position, a "
        "Linear(dim, 1, bias=False) in place of the vocabulary projection (reward and value "
        "models; exported as LlamaForSequenceClassification with num_labels 1). A score-head "
        "model is usually initialised from a language model's artifact, its body kept and the "
        "score head freshly initialised (lmforge.modelio.ModelRecipe.from_artifact(head=...)).")

    @model_validator(mode="after")
    def _shapes(self) -> DenseConfig:
        if self.dim % self.n_heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by n_heads ({self.n_heads})")
        if (self.dim // self.n_heads) % 2:
            raise ValueError(f"head dim dim/n_heads = {self.dim // self.n_heads} must be even "
                             f"for rotary embeddings")
        if self.n_heads % self.kv_heads:
            raise ValueError(f"n_heads ({self.n_heads}) must be divisible by n_kv_heads "
                             f"({self.kv_heads})")
        if self.head == "score" and self.tie_embeddings:
            raise ValueError("tie_embeddings: true has no meaning with head: score (a score "
                             "head has no vocabulary projection to tie to the embedding); "
                             "set tie_embeddings: false")
        return self

    @model_validator(mode="after")
    def _allocatable(self) -> DenseConfig:
        """At most :data:`MAX_PARAMETERS` parameters besides the embedding (whose size depends on
        the tokenizer); the bound holds for subclasses through their own ``num_parameters``."""
        n = self.num_parameters(0, non_embedding=True)
        if n > MAX_PARAMETERS:
            raise ValueError(f"this architecture has {n:.3g} parameters besides the embedding, "
                             f"more than any machine can hold (at most {MAX_PARAMETERS:.0e}); "
                             f"lower dim, n_layers or the feed-forward size")
        return self

    # -- derived sizes -------------------------------------------------------------------------
    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def hidden_dim(self) -> int:
        """The SwiGLU hidden size actually used."""
        return self.ffn_hidden or llama_ffn_hidden(self.dim, self.multiple_of)

    def num_parameters(self, vocab_size: int, non_embedding: bool = False) -> int:
        """Exact trainable parameter count of the module this config builds.

        ``non_embedding=True`` leaves out the token embedding matrix (and, when tied, the
        output projection, which is the same matrix); an untied output projection is counted.
        """
        d, kv = self.dim, self.kv_heads * self.head_dim
        attn = d * d + 2 * d * kv + d * d  # q, k, v, o
        mlp = 3 * d * self.hidden_dim  # gate, up, down
        per_layer = attn + mlp + 2 * d  # two RMSNorm weights
        embed = vocab_size * d
        head = self._head_parameters(vocab_size)
        total = self.n_layers * per_layer + d + embed + head  # + final norm
        return total - embed if non_embedding else total

    def _head_parameters(self, vocab_size: int) -> int:
        """Parameters of the output head: none when tied, ``dim`` for a score head."""
        if self.head == "score":
            return self.dim
        return 0 if self.tie_embeddings else vocab_size * self.dim

    def with_head(self, head: str) -> DenseConfig:
        """This architecture with output head ``head`` (``"lm"`` or ``"score"``); a score head
        unties the embedding. The body's parameters keep their names and shapes, so a model
        artifact of this config initialises every parameter but the new head."""
        data = self.model_dump()
        data["head"] = head
        if head == "score":
            data["tie_embeddings"] = False
        return type(self).model_validate(data)

    def flops_per_token(self, seq_len: int, vocab_size: int) -> int:
        """Training FLOPs per token (forward + backward): ``6 * N_matmul + 6 * L * T * dim``.

        ``N_matmul`` counts every weight used in a matrix multiply (the output projection
        included, tied or not; the embedding lookup excluded). The second term is the
        attention score and value products (Kaplan et al. 2020, without causal halving).
        """
        n = self.num_parameters(vocab_size, non_embedding=True)
        if self.tie_embeddings:
            n += vocab_size * self.dim
        return 6 * n + 6 * self.n_layers * seq_len * self.dim


    # -- the neutral description (backends that build the model themselves) ---------------------
    def transformer(self) -> TransformerShape:
        """This decoder as a :class:`lmforge.interfaces.TransformerShape` (its ``to_hf`` names
        are ``LlamaForCausalLM``'s)."""
        return TransformerShape(
            dim=self.dim, n_layers=self.n_layers, n_heads=self.n_heads,
            n_kv_heads=self.kv_heads, head_dim=self.head_dim, ffn_hidden=self.hidden_dim,
            max_seq_len=self.max_seq_len, norm_eps=self.norm_eps, rope_theta=self.rope_theta,
            tie_embeddings=self.tie_embeddings, init_std=self.init_std, head=self.head)

    # -- Hugging Face names (the model artifact format) and import -------------------------------
    hf_model_types: ClassVar[tuple[str, ...]] = ("llama",)

    def hf_config(self, vocab_size: int) -> dict[str, Any]:
        """``config.json`` of the matching ``transformers.LlamaForCausalLM`` (token ids are
        added by the exporter)."""
        from lmforge_models.hf import llama_config

        return llama_config(self, vocab_size)

    def to_hf(self, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """This architecture's state dict under ``LlamaForCausalLM`` names."""
        from lmforge_models.hf import to_hf

        return to_hf(self, state_dict)

    def from_hf(self, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Inverse of :meth:`to_hf`; unknown or missing names are errors naming them."""
        from lmforge_models.hf import from_hf

        return from_hf(self, state_dict)

    @classmethod
    def from_hf_config(cls, config: Mapping[str, Any]) -> DenseConfig:
        """The architecture config of a Hugging Face ``config.json``; what this architecture
        cannot represent is a ``ValueError`` naming the key."""
        from lmforge_models.hf import config_from_hf

        return config_from_hf(cls, config)


class MoEConfig(DenseConfig):
    """A Llama-family decoder whose SwiGLU MLPs are sparse Mixtral-style mixtures of experts."""

    type: Literal["moe"] = Field(default="moe", description="Selects this architecture.")  # type: ignore[assignment]
    ffn_hidden: int | None = Field(
        default=None, ge=1, description="SwiGLU hidden size of each expert. Default: 2/3 * 4 * "
        "dim rounded up to multiple_of (the Llama rule).")
    n_experts: int = Field(default=8, ge=1, le=MAX_EXPERTS,
                           description="SwiGLU experts per MoE layer.")
    top_k: int = Field(default=2, ge=1, description="Experts each token is routed to; at most "
                       "n_experts. Their router probabilities are renormalised to sum to 1.")
    router_aux_loss_coef: float = Field(
        default=0.01, ge=0.0, description="Weight of the load-balancing loss (returned by the "
        "model as aux_losses['load_balancing'] and added to the training loss); 0 disables it.")
    router_z_loss_coef: float = Field(
        default=0.0, ge=0.0, description="Weight of the router z-loss (mean squared "
        "log-sum-exp of the router logits, ST-MoE); 0 disables it.")

    hf_model_types: ClassVar[tuple[str, ...]] = ("mixtral",)

    def transformer(self) -> TransformerShape:
        """The dense description plus the experts (``to_hf`` names are
        ``MixtralForCausalLM``'s)."""
        return dataclasses.replace(
            super().transformer(), n_experts=self.n_experts, top_k=self.top_k,
            router_aux_loss_coef=self.router_aux_loss_coef,
            router_z_loss_coef=self.router_z_loss_coef)

    @model_validator(mode="after")
    def _experts(self) -> MoEConfig:
        if self.top_k > self.n_experts:
            raise ValueError(f"top_k ({self.top_k}) must be at most n_experts "
                             f"({self.n_experts}): each token picks top_k distinct experts")
        return self

    def _counts(self, vocab_size: int, experts: int) -> tuple[int, int]:
        """``(total, embed)`` with ``experts`` SwiGLU experts per layer."""
        d, kv = self.dim, self.kv_heads * self.head_dim
        attn = d * d + 2 * d * kv + d * d  # q, k, v, o
        moe = d * self.n_experts + experts * 3 * d * self.hidden_dim  # router + experts
        per_layer = attn + moe + 2 * d  # two RMSNorm weights
        embed = vocab_size * d
        head = self._head_parameters(vocab_size)
        return self.n_layers * per_layer + d + embed + head, embed

    def num_parameters(self, vocab_size: int, non_embedding: bool = False) -> int:
        """Exact trainable parameter count of the module this config builds (all experts).

        ``non_embedding=True`` leaves out the token embedding matrix (and, when tied, the
        output projection, which is the same matrix); an untied output projection is counted.
        """
        total, embed = self._counts(vocab_size, self.n_experts)
        return total - embed if non_embedding else total

    def active_parameters(self, vocab_size: int, non_embedding: bool = False) -> int:
        """Parameters used per token: as :meth:`num_parameters` with only ``top_k`` experts."""
        total, embed = self._counts(vocab_size, self.top_k)
        return total - embed if non_embedding else total

    def flops_per_token(self, seq_len: int, vocab_size: int) -> int:
        """Training FLOPs per token: ``6 * N_active_matmul + 6 * L * T * dim``, where
        ``N_active_matmul`` counts the weights a token actually multiplies (router, ``top_k``
        experts, attention, output projection; embedding lookup excluded)."""
        n = self.active_parameters(vocab_size, non_embedding=True)
        if self.tie_embeddings:
            n += vocab_size * self.dim
        return 6 * n + 6 * self.n_layers * seq_len * self.dim
