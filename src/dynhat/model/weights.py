"""The tensors one SubTransformer computes with.

The elastic SuperTransformer fills these with *views* of its shared parameters (a switch costs microseconds and
copies nothing); the extracted dense model fills them with its own contiguous parameters. Both then run the same
functions in ``dynhat.model.functional``, so they cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, TypeAlias

from torch import Tensor

from dynhat.space.config import SubTransformerConfig


class PackedLinear(Protocol):
    """A projection whose weight is stored for a kernel of its own (e.g. int8, ``dynhat.model.quantized``): it
    holds its bias and is called on the input. ``functional.linear`` runs either kind."""

    def __call__(self, x: Tensor) -> Tensor: ...


#: a projection's weight: a float matrix for ``F.linear``, or a packed projection
Weight: TypeAlias = Tensor | PackedLinear


@dataclass(frozen=True, slots=True)
class AttentionWeights:
    """Multi-head attention. Self-attention packs Q, K, V in ``in_w``; cross-attention keeps Q and K/V apart
    (they read different inputs).

    ``heads_major`` says how the rows of a packed projection are ordered: HAT's ``[part, head, dim]`` (False)
    or ``[head, part, dim]`` (True, used when the head width is fixed, so a prefix of rows is whole heads).
    """

    in_w: Weight
    in_b: Tensor
    kv_w: Weight | None
    kv_b: Tensor | None
    out_w: Weight
    out_b: Tensor
    heads: int
    head_dim: int
    heads_major: bool


@dataclass(frozen=True, slots=True)
class FeedForwardWeights:
    """``fc1_relu``: a packed ``fc1_w`` that applies the ReLU itself (one kernel instead of two)."""

    fc1_w: Weight
    fc1_b: Tensor
    fc2_w: Weight
    fc2_b: Tensor
    fc1_relu: bool = False


@dataclass(frozen=True, slots=True)
class NormWeights:
    weight: Tensor
    bias: Tensor


@dataclass(frozen=True, slots=True)
class EncoderLayerWeights:
    self_attn: AttentionWeights
    self_attn_norm: NormWeights
    ffn: FeedForwardWeights
    final_norm: NormWeights


@dataclass(frozen=True, slots=True)
class DecoderLayerWeights:
    self_attn: AttentionWeights
    self_attn_norm: NormWeights
    cross_attn: AttentionWeights
    cross_attn_norm: NormWeights
    ffn: FeedForwardWeights
    final_norm: NormWeights
    attended: int  # number of last encoder layers whose outputs this layer attends to (HAT's arbitrary attention)


@dataclass(frozen=True, slots=True)
class SubTransformerWeights:
    """Everything a forward pass of one configuration reads, plus the per-configuration scalars."""

    config: SubTransformerConfig
    encoder_embed: Tensor  # [V, d_enc]
    decoder_embed: Tensor  # [V, d_dec]; also the output projection (shared embeddings)
    encoder_positions: Tensor  # [max_pos, d_enc], rows indexed by fairseq position ids
    decoder_positions: Tensor  # [max_pos, d_dec]
    encoder: tuple[EncoderLayerWeights, ...]
    decoder: tuple[DecoderLayerWeights, ...]
    encoder_dropout: float
    decoder_dropout: float
    attention_dropout: float
    padding_idx: int
    # pre-norm models only (space ``normalize-before``): the norm after each stack's last active layer
    encoder_norm: NormWeights | None = None
    decoder_norm: NormWeights | None = None
    # the output projection when it is not ``decoder_embed`` itself (a packed copy of it)
    output: Weight | None = None
