"""Config of the ``dense`` architecture, with exact parameter and FLOP counts (light: no torch)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from lmforge import Config


def llama_ffn_hidden(dim: int, multiple_of: int) -> int:
    """The Llama rule: ``2/3 * 4 * dim`` rounded up to a multiple of ``multiple_of``."""
    hidden = int(2 * (4 * dim) / 3)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


class DenseConfig(Config):
    """A Llama-family decoder-only transformer."""

    type: Literal["dense"] = Field(default="dense", description="Selects this architecture.")
    dim: int = Field(default=256, ge=8, description="Model width (hidden size).")
    n_layers: int = Field(default=4, ge=1, description="Number of transformer blocks.")
    n_heads: int = Field(default=8, ge=1, description="Attention (query) heads; must divide dim.")
    n_kv_heads: int | None = Field(
        default=None, ge=1, description="Key/value heads for grouped-query attention; must "
        "divide n_heads. Default: n_heads (plain multi-head attention).")
    ffn_hidden: int | None = Field(
        default=None, ge=1, description="SwiGLU hidden size. Default: 2/3 * 4 * dim rounded up "
        "to multiple_of (the Llama rule).")
    multiple_of: int = Field(default=256, ge=1,
                             description="Rounding of the default ffn_hidden.")
    max_seq_len: int = Field(default=1024, ge=1,
                             description="Longest sequence the model accepts (rotary table size).")
    rope_theta: float = Field(default=10000.0, gt=0, description="Rotary embedding base.")
    norm_eps: float = Field(default=1e-5, gt=0, description="RMSNorm epsilon.")
    tie_embeddings: bool = Field(default=False, description="Share the token embedding matrix "
                                 "with the output projection.")
    init_std: float = Field(default=0.02, gt=0,
                            description="Std of the normal init of every weight matrix.")
    dropout: float = Field(default=0.0, ge=0.0, le=0.0,
                           description="Dropout probability (only 0 is supported).")

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
        head = 0 if self.tie_embeddings else vocab_size * d
        total = self.n_layers * per_layer + d + embed + head  # + final norm
        return total - embed if non_embedding else total

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


class MoEConfig(DenseConfig):
    """A Llama-family decoder whose SwiGLU MLPs are sparse Mixtral-style mixtures of experts."""

    type: Literal["moe"] = Field(default="moe", description="Selects this architecture.")  # type: ignore[assignment]
    ffn_hidden: int | None = Field(
        default=None, ge=1, description="SwiGLU hidden size of each expert. Default: 2/3 * 4 * "
        "dim rounded up to multiple_of (the Llama rule).")
    n_experts: int = Field(default=8, ge=1, description="SwiGLU experts per MoE layer.")
    top_k: int = Field(default=2, ge=1, description="Experts each token is routed to; at most "
                       "n_experts. Their router probabilities are renormalised to sum to 1.")
    router_aux_loss_coef: float = Field(
        default=0.01, ge=0.0, description="Weight of the load-balancing loss (model.aux_loss, "
        "added to the training loss); 0 disables it.")

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
        head = 0 if self.tie_embeddings else vocab_size * d
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
