"""Incremental decoding: one target position a step, with caches that are written in place.

A step is the hot loop of translation at batch 1-4, where each kernel is tiny and what surrounds the kernels
(allocations, copies, view bookkeeping, Python) costs as much as the arithmetic. So a step works on ``[B, d]``
rows rather than ``[B, 1, d]`` sequences; each layer's self-attention keys and values go into one preallocated
``[B, 2, heads, capacity, head_dim]`` buffer (a single copy per layer and step, where appending with ``cat`` would
copy the whole cache twice); the encoder-decoder keys and values are projected once per sentence; and the ReLU of
a packed feed-forward runs inside its projection. The arithmetic is ``functional``'s, so a step equals the full
teacher-forced pass to float32 rounding.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn.functional as F
from torch import Tensor

from dynhat.model.functional import (
    EncoderOut,
    cross_keys_values,
    embed_tokens,
    ffn,
    layer_norm,
    linear,
    output_logits,
    residual,
    sublayer_input,
)
from dynhat.model.weights import AttentionWeights, DecoderLayerWeights, SubTransformerWeights

DEFAULT_CAPACITY = 32  # positions a cache holds before it doubles (search passes its own length limit)


@dataclass
class DecoderState:
    """Incremental decoding cache: per layer, the self-attention keys and values of the positions so far (a
    buffer filled up to ``length``) and the fixed encoder-decoder keys and values."""

    cross_kv: list[tuple[Tensor, Tensor]]
    cross_mask: list[Tensor | None]
    capacity: int = DEFAULT_CAPACITY
    length: int = 0
    caches: list[Tensor] = field(default_factory=list)  # [B, 2, heads, capacity, head_dim]; made at step 0
    views: list[tuple[Tensor, Tensor]] = field(default_factory=list)  # each cache's keys and values

    def _use(self, caches: list[Tensor]) -> None:
        self.caches = caches
        self.views = [(c[:, 0], c[:, 1]) for c in caches]

    def reorder(self, order: Tensor, cross: bool = True) -> None:
        """Follow the surviving hypotheses in beam search (``order`` indexes the batch).

        ``cross=False`` keeps the encoder-decoder keys and values as they are: right when every row of ``order``
        comes from a row of the same sentence (a beam reshuffling its own hypotheses), whose rows all hold the
        same encoder output; it saves copying them at every step, as fairseq does.
        """
        self._use([c.index_select(0, order) for c in self.caches])
        if cross:
            self.cross_kv = [(k.index_select(0, order), v.index_select(0, order)) for k, v in self.cross_kv]
            self.cross_mask = [None if m is None else m.index_select(0, order) for m in self.cross_mask]

    def _reserve(self, w: SubTransformerWeights, x: Tensor) -> None:
        """Make the caches at the first step; double them when a step would run past their end."""
        if not self.caches:
            self._use([x.new_empty(x.shape[0], 2, layer.self_attn.heads, self.capacity, layer.self_attn.head_dim)
                       for layer in w.decoder])
        elif self.length == self.caches[0].shape[3]:
            grown = []
            for c in self.caches:
                new = c.new_empty(*c.shape[:3], 2 * c.shape[3], c.shape[4])
                new[:, :, :, : c.shape[3]] = c
                grown.append(new)
            self._use(grown)


def init_state(w: SubTransformerWeights, enc: EncoderOut, capacity: int | None = None) -> DecoderState:
    """The state before the first step; ``capacity``: the most steps expected (the caches grow past it)."""
    cross_kv, masks = [], []
    for layer in w.decoder:
        memory, mask = enc.memory(layer.attended)
        cross_kv.append(cross_keys_values(memory, layer.cross_attn))
        masks.append(mask)
    return DecoderState(cross_kv, masks, max(1, capacity or DEFAULT_CAPACITY))


def decode_step(w: SubTransformerWeights, tokens: Tensor, state: DecoderState) -> Tensor:
    """One incremental step: ``tokens`` [B] are the last outputs; returns logits [B, V]. Updates ``state``."""
    t = state.length
    x = embed_tokens(tokens, w.decoder_embed, w.decoder_positions[w.padding_idx + 1 + t])
    state._reserve(w, x)
    pre = w.decoder_norm is not None
    for i, layer in enumerate(w.decoder):
        x = _step_layer(x, layer, state, i, t, pre)
    state.length = t + 1
    if pre:
        x = layer_norm(x, w.decoder_norm)  # type: ignore[arg-type]
    return output_logits(x, w)


def _step_layer(x: Tensor, w: DecoderLayerWeights, state: DecoderState, i: int, t: int, pre: bool) -> Tensor:
    keys, values = state.views[i]
    h = _self_attention(sublayer_input(x, w.self_attn_norm, pre), w.self_attn, state.caches[i], keys, values, t)
    x = residual(x, h, w.self_attn_norm, pre)
    cross_k, cross_v = state.cross_kv[i]
    h = _cross_attention(sublayer_input(x, w.cross_attn_norm, pre), w.cross_attn, cross_k, cross_v,
                         state.cross_mask[i])
    x = residual(x, h, w.cross_attn_norm, pre)
    return residual(x, ffn(sublayer_input(x, w.final_norm, pre), w.ffn), w.final_norm, pre)


def _self_attention(y: Tensor, w: AttentionWeights, cache: Tensor, keys: Tensor, values: Tensor, t: int) -> Tensor:
    """Write this position's key and value at ``t`` in the cache, attend over positions 0..t."""
    b = y.shape[0]
    qkv = linear(y, w.in_w, w.in_b)
    parts = (qkv.view(b, w.heads, 3, w.head_dim).transpose(1, 2) if w.heads_major
             else qkv.view(b, 3, w.heads, w.head_dim))  # [B, 3, heads, head_dim]
    cache[:, :, :, t] = parts[:, 1:]
    out = F.scaled_dot_product_attention(parts[:, 0].unsqueeze(2), keys[:, :, : t + 1], values[:, :, : t + 1])
    return linear(out.reshape(b, -1), w.out_w, w.out_b)


def _cross_attention(y: Tensor, w: AttentionWeights, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
    b = y.shape[0]
    q = linear(y, w.in_w, w.in_b).view(b, w.heads, 1, w.head_dim)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return linear(out.reshape(b, -1), w.out_w, w.out_b)
