"""The Transformer's math, written once over ``SubTransformerWeights``.

Numerics follow HAT / fairseq 0.8 wherever a HAT checkpoint depends on them: post-norm layers, ReLU, token
embeddings scaled by sqrt(d), a sinusoid built at the SuperTransformer's width and then sliced, fairseq's position
numbering (non-pad tokens numbered from padding_idx + 1), and arbitrary encoder-decoder attention over the
time-concatenated outputs of the last 1-3 encoder layers. Tensors are batch-first.

Pre-norm (a space with ``normalize-before``, weights with final norms) normalises each sublayer's input instead
of the residual sum, and normalises a stack's output with its final norm: for a SubTransformer of any depth the
final norm follows its last active layer, so a shallow SubTransformer reads a normalised stream as the deep ones
do. Arbitrary attention then reads each attended encoder layer's output through the final norm.
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


def _embed(tokens: Tensor, table: Tensor, positions_table: Tensor, positions: Tensor, p: float,
           training: bool) -> Tensor:
    x = F.embedding(tokens, table) * math.sqrt(table.shape[1]) + positions_table[positions]
    return F.dropout(x, p, training)


def _layer_norm(x: Tensor, w: NormWeights) -> Tensor:
    return F.layer_norm(x, (w.weight.shape[0],), w.weight, w.bias, LAYER_NORM_EPS)


def _ffn(x: Tensor, w: FeedForwardWeights, p: float, training: bool) -> Tensor:
    return F.dropout(F.linear(F.relu(F.linear(x, w.fc1_w, w.fc1_b)), w.fc2_w, w.fc2_b), p, training)


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
    return F.linear(out.transpose(1, 2).reshape(b, t, -1), w.out_w, w.out_b)


def cross_keys_values(memory: Tensor, w: AttentionWeights) -> tuple[Tensor, Tensor]:
    """Encoder-decoder keys and values: computed once per sentence, reused at every decoding step."""
    k, v = _split_heads(F.linear(memory, w.kv_w, w.kv_b), 2, w)  # type: ignore[arg-type]
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
        layers.append(x if w.encoder_norm is None else _layer_norm(x, w.encoder_norm))
    return EncoderOut(layers, key_mask)


def _sublayer_input(x: Tensor, norm: NormWeights, pre: bool) -> Tensor:
    """What a sublayer reads: ``LN(x)`` in pre-norm, ``x`` itself in post-norm."""
    return _layer_norm(x, norm) if pre else x


def _add(x: Tensor, h: Tensor, norm: NormWeights, pre: bool) -> Tensor:
    """The residual sum: ``x + h`` in pre-norm, ``LN(x + h)`` in post-norm (HAT's)."""
    return x + h if pre else _layer_norm(x + h, norm)


def _encoder_layer(x: Tensor, w: EncoderLayerWeights, key_mask: Tensor | None, p: float, p_attn: float,
                   training: bool, pre: bool = False) -> Tensor:
    y = _sublayer_input(x, w.self_attn_norm, pre)
    q, k, v = _split_heads(F.linear(y, w.self_attn.in_w, w.self_attn.in_b), 3, w.self_attn)
    h = _attend(q, k, v, w.self_attn, key_mask, False, p_attn, training)
    x = _add(x, F.dropout(h, p, training), w.self_attn_norm, pre)
    return _add(x, _ffn(_sublayer_input(x, w.final_norm, pre), w.ffn, p, training), w.final_norm, pre)


def _decoder_layer(x: Tensor, w: DecoderLayerWeights, self_kv: tuple[Tensor, Tensor] | None,
                   cross_kv: tuple[Tensor, Tensor], cross_mask: Tensor | None, p: float, p_attn: float,
                   training: bool, pre: bool = False) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """One decoder layer. ``self_kv`` given: incremental step appending to that cache; None: full causal pass."""
    y = _sublayer_input(x, w.self_attn_norm, pre)
    q, k, v = _split_heads(F.linear(y, w.self_attn.in_w, w.self_attn.in_b), 3, w.self_attn)
    if self_kv is not None:
        k = torch.cat([self_kv[0], k], dim=2)
        v = torch.cat([self_kv[1], v], dim=2)
    h = _attend(q, k, v, w.self_attn, None, self_kv is None and x.shape[1] > 1, p_attn, training)
    x = _add(x, F.dropout(h, p, training), w.self_attn_norm, pre)
    y = _sublayer_input(x, w.cross_attn_norm, pre)
    (cq,) = _split_heads(F.linear(y, w.cross_attn.in_w, w.cross_attn.in_b), 1, w.cross_attn)
    h = _attend(cq, cross_kv[0], cross_kv[1], w.cross_attn, cross_mask, False, p_attn, training)
    x = _add(x, F.dropout(h, p, training), w.cross_attn_norm, pre)
    x = _add(x, _ffn(_sublayer_input(x, w.final_norm, pre), w.ffn, p, training), w.final_norm, pre)
    return x, (k, v)


def decode(w: SubTransformerWeights, prev_tokens: Tensor, enc: EncoderOut, training: bool = False) -> Tensor:
    """Teacher-forced decoder pass: logits [B, T, V] for every target position."""
    p = w.decoder_dropout
    x = _embed(prev_tokens, w.decoder_embed, w.decoder_positions, make_positions(prev_tokens, w.padding_idx), p,
               training)
    for layer in w.decoder:
        memory, mask = enc.memory(layer.attended)
        x, _ = _decoder_layer(x, layer, None, cross_keys_values(memory, layer.cross_attn), mask, p,
                              w.attention_dropout, training, w.decoder_norm is not None)
    if w.decoder_norm is not None:
        x = _layer_norm(x, w.decoder_norm)
    return F.linear(x, w.decoder_embed)


@dataclass
class DecoderState:
    """Incremental decoding cache: per layer, self-attention K/V (grows a step at a time) and the fixed
    encoder-decoder K/V."""

    self_kv: list[tuple[Tensor, Tensor] | None]
    cross_kv: list[tuple[Tensor, Tensor]]
    cross_mask: list[Tensor | None]
    length: int = 0

    def reorder(self, order: Tensor, cross: bool = True) -> None:
        """Follow the surviving hypotheses in beam search (``order`` indexes the batch).

        ``cross=False`` keeps the encoder-decoder keys and values as they are: right when every row of ``order``
        comes from a row of the same sentence (a beam reshuffling its own hypotheses), whose rows all hold the
        same encoder output; it saves copying them at every step, as fairseq does.
        """
        self.self_kv = [None if kv is None else (kv[0].index_select(0, order), kv[1].index_select(0, order))
                        for kv in self.self_kv]
        if cross:
            self.cross_kv = [(k.index_select(0, order), v.index_select(0, order)) for k, v in self.cross_kv]
            self.cross_mask = [None if m is None else m.index_select(0, order) for m in self.cross_mask]


def init_state(w: SubTransformerWeights, enc: EncoderOut) -> DecoderState:
    cross_kv, masks = [], []
    for layer in w.decoder:
        memory, mask = enc.memory(layer.attended)
        cross_kv.append(cross_keys_values(memory, layer.cross_attn))
        masks.append(mask)
    return DecoderState([None] * len(w.decoder), cross_kv, masks)


def decode_step(w: SubTransformerWeights, tokens: Tensor, state: DecoderState) -> Tensor:
    """One incremental step: ``tokens`` [B] are the last outputs; returns logits [B, V]. Updates ``state``."""
    positions = torch.full((tokens.shape[0], 1), w.padding_idx + 1 + state.length, dtype=torch.long,
                           device=tokens.device)
    x = _embed(tokens.unsqueeze(1), w.decoder_embed, w.decoder_positions, positions, 0.0, False)
    for i, layer in enumerate(w.decoder):
        x, state.self_kv[i] = _decoder_layer(x, layer, state.self_kv[i] or _empty_kv(x, layer.self_attn),
                                             state.cross_kv[i], state.cross_mask[i], 0.0, 0.0, False,
                                             w.decoder_norm is not None)
    state.length += 1
    if w.decoder_norm is not None:
        x = _layer_norm(x, w.decoder_norm)
    return F.linear(x[:, 0], w.decoder_embed)


def _empty_kv(x: Tensor, w: AttentionWeights) -> tuple[Tensor, Tensor]:
    empty = x.new_empty(x.shape[0], w.heads, 0, w.head_dim)
    return empty, empty
