"""The elastic SuperTransformer: one set of weights, any SubTransformer of its design space.

A SubTransformer uses the leading slice of every weight (HAT's rule). Slicing is done once per configuration and
the views are cached, so ``set_config`` is a dictionary look-up after the first time and copies nothing.
Parameter names follow HAT's state-dict layout (``encoder.layers.0.self_attn.in_proj_weight``, ...), so a HAT
checkpoint's tensors map one to one.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from dynhat.model import weights as mw
from dynhat.model.functional import sinusoid_table
from dynhat.model.seq2seq import Seq2SeqModel
from dynhat.space.config import SubTransformerConfig
from dynhat.space.space import ARBITRARY_ATTENDED, DesignSpace


@dataclass(frozen=True)
class ModelSettings:
    """What a SuperTransformer needs beyond its design space."""

    vocab_size: int
    padding_idx: int = 1
    eos_idx: int = 2
    dropout: float = 0.3
    attention_dropout: float = 0.1
    max_positions: int = 1024
    scale_dropout: bool = True  # HAT: dropout x d / d_max for a SubTransformer of embedding dim d


class ElasticAttention(nn.Module):
    """HAT's packed attention: ``in_proj_weight`` [3 x qkv, d] holds Q, K, V; ``out_proj`` maps qkv -> d."""

    def __init__(self, embed_dim: int, qkv_dim: int) -> None:
        super().__init__()
        self.qkv_dim = qkv_dim
        self.in_proj_weight = nn.Parameter(torch.empty(3 * qkv_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * qkv_dim))
        self.out_proj = nn.Linear(qkv_dim, embed_dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.xavier_uniform_(self.out_proj.weight)
        nn.init.zeros_(self.out_proj.bias)

    def self_weights(self, d: int, heads: int, space: DesignSpace) -> mw.AttentionWeights:
        width = space.qkv_width(heads)
        return mw.AttentionWeights(self.in_proj_weight[: 3 * width, :d], self.in_proj_bias[: 3 * width], None, None,
                                   self.out_proj.weight[:d, :width], self.out_proj.bias[:d], heads,
                                   space.head_width(heads), space.head_dim is not None)

    def cross_weights(self, d_q: int, d_kv: int, heads: int, space: DesignSpace) -> mw.AttentionWeights:
        width, q = space.qkv_width(heads), self.qkv_dim
        return mw.AttentionWeights(self.in_proj_weight[:width, :d_q], self.in_proj_bias[:width],
                                   self.in_proj_weight[q : q + 2 * width, :d_kv], self.in_proj_bias[q : q + 2 * width],
                                   self.out_proj.weight[:d_q, :width], self.out_proj.bias[:d_q], heads,
                                   space.head_width(heads), space.head_dim is not None)


def column_major_embedding(vocab_size: int, width: int, padding_idx: int) -> nn.Embedding:
    """The shared table, stored column-major: a ``[V, width]`` parameter over a contiguous ``[width, V]`` buffer.

    The output projection reads the first d columns; in this layout they are one contiguous ``[d, V]`` block, so a
    narrower SubTransformer's projection streams memory as a dense model's does (row-major slices are strided and
    measured ~20% slower), and with a beam of 4 it runs ~1.8x faster than a row-major table. The state dict keeps
    HAT's ``[V, width]`` shape; ``load_state_dict`` copies into this layout.
    """
    embed = nn.Embedding(vocab_size, width, padding_idx=padding_idx)
    embed.weight = nn.Parameter(torch.empty(width, vocab_size).t())
    return embed


def _linear(n_in: int, n_out: int) -> nn.Linear:
    layer = nn.Linear(n_in, n_out)
    nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def _norm(w: nn.LayerNorm, d: int) -> mw.NormWeights:
    return mw.NormWeights(w.weight[:d], w.bias[:d])


def _ffn(fc1: nn.Linear, fc2: nn.Linear, d: int, f: int) -> mw.FeedForwardWeights:
    return mw.FeedForwardWeights(fc1.weight[:f, :d], fc1.bias[:f], fc2.weight[:d, :f], fc2.bias[:d])


class EncoderLayer(nn.Module):
    def __init__(self, space: DesignSpace) -> None:
        super().__init__()
        d, f = space.encoder_embed_dim, space.encoder_ffn_embed_dim
        self.self_attn = ElasticAttention(d, space.qkv_dim)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.fc1 = _linear(d, f)
        self.fc2 = _linear(f, d)
        self.final_layer_norm = nn.LayerNorm(d)

    def weights(self, d: int, f: int, heads: int, space: DesignSpace) -> mw.EncoderLayerWeights:
        return mw.EncoderLayerWeights(self.self_attn.self_weights(d, heads, space), _norm(self.self_attn_layer_norm, d),
                                      _ffn(self.fc1, self.fc2, d, f), _norm(self.final_layer_norm, d))


class DecoderLayer(nn.Module):
    def __init__(self, space: DesignSpace) -> None:
        super().__init__()
        d, f = space.decoder_embed_dim, space.decoder_ffn_embed_dim
        self.self_attn = ElasticAttention(d, space.qkv_dim)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.encoder_attn = ElasticAttention(max(d, space.encoder_embed_dim), space.qkv_dim)
        self.encoder_attn_layer_norm = nn.LayerNorm(d)
        self.fc1 = _linear(d, f)
        self.fc2 = _linear(f, d)
        self.final_layer_norm = nn.LayerNorm(d)

    def weights(self, d: int, d_enc: int, f: int, self_heads: int, cross_heads: int, arbitrary: int,
                space: DesignSpace) -> mw.DecoderLayerWeights:
        return mw.DecoderLayerWeights(
            self.self_attn.self_weights(d, self_heads, space), _norm(self.self_attn_layer_norm, d),
            self.encoder_attn.cross_weights(d, d_enc, cross_heads, space), _norm(self.encoder_attn_layer_norm, d),
            _ffn(self.fc1, self.fc2, d, f), _norm(self.final_layer_norm, d), ARBITRARY_ATTENDED[arbitrary])


class _Stack(nn.Module):
    """Holds ``embed_tokens`` (shared between the stacks) and ``layers`` under HAT's key names, and for pre-norm
    the stack's final ``layer_norm`` (fairseq's key; absent from post-norm models, so HAT's keys stay exact)."""

    def __init__(self, embed_tokens: nn.Embedding, layers: list[nn.Module], final_norm: int | None) -> None:
        super().__init__()
        self.embed_tokens = embed_tokens
        self.layers = nn.ModuleList(layers)
        if final_norm is not None:
            self.layer_norm = nn.LayerNorm(final_norm)

    def final_norm(self, d: int) -> mw.NormWeights | None:
        return _norm(self.layer_norm, d) if hasattr(self, "layer_norm") else None


class SuperTransformer(Seq2SeqModel):
    """Weight-shared encoder-decoder Transformer over a joint vocabulary (shared input/output embeddings)."""

    PLAN_CACHE_SIZE = 256

    def __init__(self, space: DesignSpace, settings: ModelSettings) -> None:
        super().__init__()
        self.space = space
        self.settings = settings
        self.padding_idx = settings.padding_idx
        self.eos_idx = settings.eos_idx
        width = max(space.encoder_embed_dim, space.decoder_embed_dim)
        embed = column_major_embedding(settings.vocab_size, width, settings.padding_idx)
        nn.init.normal_(embed.weight, mean=0.0, std=width**-0.5)
        with torch.no_grad():
            embed.weight[settings.padding_idx].zero_()
        pre = space.normalize_before
        self.encoder = _Stack(embed, [EncoderLayer(space) for _ in range(space.encoder_layers)],
                              space.encoder_embed_dim if pre else None)
        self.decoder = _Stack(embed, [DecoderLayer(space) for _ in range(space.decoder_layers)],
                              space.decoder_embed_dim if pre else None)
        positions = settings.max_positions + settings.padding_idx + 1
        self.register_buffer("positions", sinusoid_table(positions, width, settings.padding_idx), persistent=False)
        self._plans: OrderedDict[SubTransformerConfig, mw.SubTransformerWeights] = OrderedDict()
        self._lock = threading.Lock()
        self._active: mw.SubTransformerWeights | None = None

    # ------------------------------------------------------------------ configurations
    def set_config(self, config: SubTransformerConfig) -> None:
        """Make ``config`` the default for calls without one. Views only: nothing is copied or allocated
        once the configuration has been seen."""
        self._active = self.weights(config)

    @property
    def active_config(self) -> SubTransformerConfig | None:
        return None if self._active is None else self._active.config

    def weights(self, config: SubTransformerConfig | None = None) -> mw.SubTransformerWeights:
        if config is None:
            if self._active is None:
                raise RuntimeError("no active SubTransformer: call set_config(config) or pass config=")
            return self._active
        with self._lock:
            plan = self._plans.get(config)
            if plan is not None:
                self._plans.move_to_end(config)
                return plan
        plan = self._slice(config)
        with self._lock:
            self._plans[config] = plan
            if len(self._plans) > self.PLAN_CACHE_SIZE:
                self._plans.popitem(last=False)
        return plan

    def _slice(self, config: SubTransformerConfig) -> mw.SubTransformerWeights:
        config.validate(self.space)
        s, space = self.settings, self.space
        d_enc, d_dec = config.encoder_embed_dim, config.decoder_embed_dim
        # Views must carry autograd history so training through a cached plan reaches the parameters,
        # even when the plan is first built under torch.inference_mode().
        with torch.inference_mode(False), torch.enable_grad():
            table = self.encoder.embed_tokens.weight
            encoder = tuple(
                self.encoder.layers[i].weights(d_enc, config.encoder_ffn_embed_dim[i],
                                               config.encoder_self_attention_heads[i], space)
                for i in range(config.encoder_layer_num)
            )
            decoder = tuple(
                self.decoder.layers[i].weights(d_dec, d_enc, config.decoder_ffn_embed_dim[i],
                                               config.decoder_self_attention_heads[i],
                                               config.decoder_ende_attention_heads[i],
                                               config.decoder_arbitrary_ende_attn[i], space)
                for i in range(config.decoder_layer_num)
            )
            return mw.SubTransformerWeights(
                config=config, encoder_embed=table[:, :d_enc], decoder_embed=table[:, :d_dec],
                encoder_positions=self.positions[:, :d_enc], decoder_positions=self.positions[:, :d_dec],
                encoder=encoder, decoder=decoder,
                encoder_dropout=self._dropout(d_enc, space.encoder_embed_dim),
                decoder_dropout=self._dropout(d_dec, space.decoder_embed_dim),
                attention_dropout=s.attention_dropout, padding_idx=s.padding_idx,
                encoder_norm=self.encoder.final_norm(d_enc), decoder_norm=self.decoder.final_norm(d_dec),
            )

    def _dropout(self, d: int, d_max: int) -> float:
        return self.settings.dropout * d / d_max if self.settings.scale_dropout else self.settings.dropout

    def _apply(self, fn, recurse: bool = True):  # type: ignore[no-untyped-def]
        """Moving or casting the parameters replaces them: cached views would point at the old tensors."""
        result = super()._apply(fn, recurse)
        with self._lock:
            active = self.active_config
            self._plans.clear()
            self._active = None
        if active is not None:
            self.set_config(active)
        return result

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

