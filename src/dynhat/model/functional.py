"""The Transformer's math, written once over ``SubTransformerWeights``.

Numerics follow HAT / fairseq 0.8 wherever a HAT checkpoint depends on them: post-norm layers, ReLU, token
embeddings scaled by sqrt(d), a sinusoid built at the SuperTransformer's width and then sliced, fairseq's position
numbering (non-pad tokens numbered from padding_idx + 1), and arbitrary encoder-decoder attention over the
time-concatenated outputs of the last 1-3 encoder layers. Tensors are batch-first.

Pre-norm (a space with ``normalize-before``, weights with final norms) normalises each sublayer's input instead
of the residual sum, and normalises a stack's output with its final norm: for a SubTransformer of any depth the
final norm follows its last active layer, so a shallow SubTransformer reads a normalised stream as the deep ones
do. Arbitrary attention then reads each attended encoder layer's output through the final norm.

Every projection goes through ``linear``, which runs a float weight with ``F.linear`` and a packed one (int8,
``dynhat.model.quantized``) with its own kernel, so one implementation serves both precisions. The incremental
decoder (one position a step, preallocated caches) is ``dynhat.model.incremental``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from dynhat.model.weights import (
    AttentionWeights,
    DecoderLayerWeights,
    EncoderLayerWeights,
    FeedForwardWeights,
    NormWeights,
    SubTransformerWeights,
    Weight,
)

LAYER_NORM_EPS = 1e-5


def sinusoid_table(num_positions: int, dim: int, padding_idx: int) -> Tensor:
    """fairseq's sinusoidal table: sin in the first half of the channels, cos in the second, pad row zero."""
    half = dim // 2
    scale = math.log(10000) / (half - 1)
    freqs = torch.exp(torch.arange(half, dtype=torch.float) * -scale)
    angles = torch.arange(num_positions, dtype=torch.float).unsqueeze(1) * freqs.unsqueeze(0)
    table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    if dim % 2:
        table = torch.cat([table, torch.zeros(num_positions, 1)], dim=1)
    table[padding_idx] = 0
    return table


def make_positions(tokens: Tensor, padding_idx: int) -> Tensor:
    """Position ids as fairseq numbers them: padding_idx + 1, + 2, ... for non-pad tokens, padding_idx for pads."""
    mask = tokens.ne(padding_idx).long()
    return torch.cumsum(mask, dim=1) * mask + padding_idx


def linear(x: Tensor, w: Weight, b: Tensor | None) -> Tensor:
    """``x @ w.T + b`` for a float weight; a packed weight holds its bias and runs its own kernel."""
    if isinstance(w, Tensor):
        return F.linear(x, w, b)
    return w(x)


def embed_tokens(tokens: Tensor, table: Tensor, positions: Tensor) -> Tensor:
    """Token embeddings scaled by sqrt(d) plus their positions' rows (one fused multiply-add)."""
    return torch.add(positions, F.embedding(tokens, table), alpha=math.sqrt(table.shape[1]))


def _embed(tokens: Tensor, table: Tensor, positions_table: Tensor, positions: Tensor, p: float,
           training: bool) -> Tensor:
    return F.dropout(embed_tokens(tokens, table, positions_table[positions]), p, training)


def layer_norm(x: Tensor, w: NormWeights) -> Tensor:
    return F.layer_norm(x, (w.weight.shape[0],), w.weight, w.bias, LAYER_NORM_EPS)



def ffn(x: Tensor, w: FeedForwardWeights) -> Tensor:
    """fc2(relu(fc1(x))), without dropout."""
    h = linear(x, w.fc1_w, w.fc1_b)
    return linear(h if w.fc1_relu else torch.relu_(h), w.fc2_w, w.fc2_b)


def _ffn(x: Tensor, w: FeedForwardWeights, p: float, training: bool) -> Tensor:
    if not training:
        return ffn(x, w)
    return F.dropout(linear(F.relu(linear(x, w.fc1_w, w.fc1_b)), w.fc2_w, w.fc2_b), p, training)


def output_logits(x: Tensor, w: SubTransformerWeights) -> Tensor:
    """The output projection: the shared embedding, or its packed copy."""
    return linear(x, w.decoder_embed if w.output is None else w.output, None)


def _split_heads(y: Tensor, parts: int, w: AttentionWeights) -> tuple[Tensor, ...]:
    """[B, T, parts*heads*hd] -> ``parts`` tensors [B, heads, T, hd], following the row layout."""
    b, t, _ = y.shape
    if w.heads_major:
        return tuple(y.view(b, t, w.heads, parts, w.head_dim).unbind(3)[i].transpose(1, 2) for i in range(parts))
    return tuple(y.view(b, t, parts, w.heads, w.head_dim).unbind(2)[i].transpose(1, 2) for i in range(parts))


def _attend(q: Tensor, k: Tensor, v: Tensor, w: AttentionWeights, mask: Tensor | None, causal: bool,
            p: float, training: bool) -> Tensor:
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p if training else 0.0,
                                         is_causal=causal)
    b, _, t, _ = out.shape
    return linear(out.transpose(1, 2).reshape(b, t, -1), w.out_w, w.out_b)


def cross_keys_values(memory: Tensor, w: AttentionWeights) -> tuple[Tensor, Tensor]:
    """Encoder-decoder keys and values: computed once per sentence, reused at every decoding step."""
    k, v = _split_heads(linear(memory, w.kv_w, w.kv_b), 2, w)  # type: ignore[arg-type]
    return k, v


@dataclass
class EncoderOut:
    """All encoder layers' outputs (arbitrary attention reads the last 1-3) and the source key mask."""

    layers: list[Tensor]
    key_mask: Tensor | None  # [B, 1, 1, S] bool, True = attend; None when nothing is padded
    _memory: dict[int, tuple[Tensor, Tensor | None]] = field(default_factory=dict)

    def memory(self, attended: int) -> tuple[Tensor, Tensor | None]:
        """Outputs of the last ``attended`` layers concatenated along time (HAT's order: last first)."""
        if attended not in self._memory:
            if attended == 1:
                self._memory[attended] = (self.layers[-1], self.key_mask)
            else:
                mem = torch.cat([self.layers[-i] for i in range(1, attended + 1)], dim=1)
                mask = None if self.key_mask is None else self.key_mask.repeat(1, 1, 1, attended)
                self._memory[attended] = (mem, mask)
        return self._memory[attended]

    def reorder(self, order: Tensor) -> EncoderOut:
        return EncoderOut([x.index_select(0, order) for x in self.layers],
                          None if self.key_mask is None else self.key_mask.index_select(0, order))


def encode(w: SubTransformerWeights, src_tokens: Tensor, training: bool = False) -> EncoderOut:
    pad = src_tokens.eq(w.padding_idx)
    key_mask = (~pad)[:, None, None, :] if bool(pad.any()) else None
    p = w.encoder_dropout
    x = _embed(src_tokens, w.encoder_embed, w.encoder_positions, make_positions(src_tokens, w.padding_idx), p,
               training)
    layers: list[Tensor] = []
    for layer in w.encoder:
        x = _encoder_layer(x, layer, key_mask, p, w.attention_dropout, training, w.encoder_norm is not None)
        layers.append(x if w.encoder_norm is None else layer_norm(x, w.encoder_norm))
    return EncoderOut(layers, key_mask)


def sublayer_input(x: Tensor, norm: NormWeights, pre: bool) -> Tensor:
    """What a sublayer reads: ``LN(x)`` in pre-norm, ``x`` itself in post-norm."""
    return layer_norm(x, norm) if pre else x


def residual(x: Tensor, h: Tensor, norm: NormWeights, pre: bool) -> Tensor:
    """The residual sum: ``x + h`` in pre-norm, ``LN(x + h)`` in post-norm (HAT's)."""
    return x + h if pre else layer_norm(x + h, norm)


def _encoder_layer(x: Tensor, w: EncoderLayerWeights, key_mask: Tensor | None, p: float, p_attn: float,
                   training: bool, pre: bool = False) -> Tensor:
    y = sublayer_input(x, w.self_attn_norm, pre)
    q, k, v = _split_heads(linear(y, w.self_attn.in_w, w.self_attn.in_b), 3, w.self_attn)
    h = _attend(q, k, v, w.self_attn, key_mask, False, p_attn, training)
    x = residual(x, F.dropout(h, p, training), w.self_attn_norm, pre)
    return residual(x, _ffn(sublayer_input(x, w.final_norm, pre), w.ffn, p, training), w.final_norm, pre)


def _decoder_layer(x: Tensor, w: DecoderLayerWeights, cross_kv: tuple[Tensor, Tensor], cross_mask: Tensor | None,
                   p: float, p_attn: float, training: bool, pre: bool = False) -> Tensor:
    """One decoder layer over every target position (causal self-attention)."""
    y = sublayer_input(x, w.self_attn_norm, pre)
    q, k, v = _split_heads(linear(y, w.self_attn.in_w, w.self_attn.in_b), 3, w.self_attn)
    h = _attend(q, k, v, w.self_attn, None, x.shape[1] > 1, p_attn, training)
    x = residual(x, F.dropout(h, p, training), w.self_attn_norm, pre)
    y = sublayer_input(x, w.cross_attn_norm, pre)
    (cq,) = _split_heads(linear(y, w.cross_attn.in_w, w.cross_attn.in_b), 1, w.cross_attn)
    h = _attend(cq, cross_kv[0], cross_kv[1], w.cross_attn, cross_mask, False, p_attn, training)
    x = residual(x, F.dropout(h, p, training), w.cross_attn_norm, pre)
    return residual(x, _ffn(sublayer_input(x, w.final_norm, pre), w.ffn, p, training), w.final_norm, pre)


def decode(w: SubTransformerWeights, prev_tokens: Tensor, enc: EncoderOut, training: bool = False) -> Tensor:
    """Teacher-forced decoder pass: logits [B, T, V] for every target position."""
    p = w.decoder_dropout
    x = _embed(prev_tokens, w.decoder_embed, w.decoder_positions, make_positions(prev_tokens, w.padding_idx), p,
               training)
    for layer in w.decoder:
        memory, mask = enc.memory(layer.attended)
        x = _decoder_layer(x, layer, cross_keys_values(memory, layer.cross_attn), mask, p, w.attention_dropout,
                           training, w.decoder_norm is not None)
    if w.decoder_norm is not None:
        x = layer_norm(x, w.decoder_norm)
    return output_logits(x, w)
