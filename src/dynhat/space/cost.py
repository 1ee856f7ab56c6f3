"""Analytic size and compute of a SubTransformer, without building it.

Parameters are those of the extracted dense model: per-layer weights and biases, plus one shared embedding table
(encoder input, decoder input and output projection) of ``vocab x max(d_enc, d_dec)``. HAT's README counts
exclude that table: ``ParamCount.non_embedding`` is the number to set beside HAT's.

Multiply-accumulates follow the latency protocol's work: encode ``src_len`` tokens once, then ``tgt_len``
incremental decoder steps at batch 1 (step t attends to t cached positions), including the output projection
to the vocabulary. Element-wise work (softmax, layer norm, residuals) is left out.
"""

from __future__ import annotations

from dataclasses import dataclass

from dynhat.space.config import SubTransformerConfig
from dynhat.space.space import ARBITRARY_ATTENDED, DesignSpace

#: Joint vocabulary each shipped space is used with (HAT: 32,768 for WMT'14; Multi30k: see dynhat.data.vocab).
_STANDARD_VOCAB = {"hat-wmt14-en-de": 32768}
_DEFAULT_VOCAB = 8000


def default_vocab(space: DesignSpace) -> int:
    return _STANDARD_VOCAB.get(space.name, _DEFAULT_VOCAB)


@dataclass(frozen=True)
class ParamCount:
    embedding: int
    encoder: int
    decoder: int

    @property
    def non_embedding(self) -> int:
        return self.encoder + self.decoder

    @property
    def total(self) -> int:
        return self.embedding + self.encoder + self.decoder


def _attention_params(d_q: int, d_kv: int, width: int) -> int:
    """Q from d_q, K and V from d_kv, each ``width`` wide with bias; output projection back to d_q."""
    return width * d_q + 2 * width * d_kv + 3 * width + width * d_q + d_q


def _ffn_params(d: int, f: int) -> int:
    return 2 * d * f + f + d


def count_params(config: SubTransformerConfig, space: DesignSpace, vocab_size: int) -> ParamCount:
    d_e, d_d = config.encoder_embed_dim, config.decoder_embed_dim
    encoder = sum(
        _attention_params(d_e, d_e, space.qkv_width(h)) + _ffn_params(d_e, f) + 4 * d_e
        for f, h in zip(config.encoder_ffn_embed_dim, config.encoder_self_attention_heads, strict=True)
    )
    decoder = sum(
        _attention_params(d_d, d_d, space.qkv_width(hs)) + _attention_params(d_d, d_e, space.qkv_width(hc))
        + _ffn_params(d_d, f) + 6 * d_d
        for f, hs, hc in zip(config.decoder_ffn_embed_dim, config.decoder_self_attention_heads,
                             config.decoder_ende_attention_heads, strict=True)
    )
    return ParamCount(vocab_size * max(d_e, d_d), encoder, decoder)


def layer_macs(config: SubTransformerConfig, space: DesignSpace, src_len: int = 30, tgt_len: int = 30
               ) -> tuple[list[int], list[int]]:
    """Multiply-accumulates of each active encoder and decoder layer (encode ``src_len`` tokens, ``tgt_len``
    incremental decoder steps, batch 1): ``count_macs`` without the output projection (``tgt_len * d_dec *
    vocab``); per layer, the latency predictors' features (``dynhat.latency.features``)."""
    d_e, d_d, s, t = config.encoder_embed_dim, config.decoder_embed_dim, src_len, tgt_len
    enc = []
    for f, h in zip(config.encoder_ffn_embed_dim, config.encoder_self_attention_heads, strict=True):
        w = space.qkv_width(h)
        enc.append(s * (4 * w * d_e + 2 * d_e * f) + 2 * s * s * w)
    dec = []
    cached = t * (t + 1) // 2
    for f, hs, hc, arb in zip(config.decoder_ffn_embed_dim, config.decoder_self_attention_heads,
                              config.decoder_ende_attention_heads, config.decoder_arbitrary_ende_attn, strict=True):
        ws, wc, keys = space.qkv_width(hs), space.qkv_width(hc), ARBITRARY_ATTENDED[arb] * s
        dec.append(t * (4 * ws * d_d + 2 * wc * d_d + 2 * d_d * f + 2 * keys * wc) + 2 * cached * ws
                   + keys * 2 * wc * d_e)
    return enc, dec


def count_macs(config: SubTransformerConfig, space: DesignSpace, vocab_size: int, src_len: int = 30,
               tgt_len: int = 30) -> int:
    enc, dec = layer_macs(config, space, src_len, tgt_len)
    return sum(enc) + sum(dec) + tgt_len * config.decoder_embed_dim * vocab_size
