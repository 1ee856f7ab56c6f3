"""What a latency predictor sees of a SubTransformer.

Two encodings:

* ``hat_features``: HAT's 10 numbers, the layout of HAT's published latency CSVs. Per-layer values are averaged
  over the *active* layers, and the arbitrary encoder-decoder attention value is first mapped to the number of
  encoder layers it attends to (-1 -> 1, 1 -> 2, 2 -> 3). Which layer has which value is lost.
* ``layer_features``: one block per SuperTransformer layer slot (zeros for inactive layers) plus an analytic cost
  term per layer (millions of multiply-accumulates under the latency protocol, the same count as
  ``dynhat.space.cost.layer_macs``). For datasets that keep the full configuration (ours do).

``hat_derived_features`` expands HAT's 10 numbers with per-stack sums and products (e.g. decoder layers x embed dim
x mean FFN width, proportional to the decoder FFN's compute): a latency is a sum over layers, so these are the
terms a linear model needs.
"""

from __future__ import annotations

import numpy as np

from dynhat.errors import ConfigError
from dynhat.space.config import SubTransformerConfig
from dynhat.space.cost import default_vocab, layer_macs
from dynhat.space.space import ARBITRARY_ATTENDED, DesignSpace

#: HAT's feature columns, in the order of its latency CSVs.
HAT_FEATURES = (
    "encoder_embed_dim", "encoder_layer_num", "encoder_ffn_embed_dim_avg", "encoder_self_attention_heads_avg",
    "decoder_embed_dim", "decoder_layer_num", "decoder_ffn_embed_dim_avg", "decoder_self_attention_heads_avg",
    "decoder_ende_attention_heads_avg", "decoder_arbitrary_ende_attn_avg",
)  # fmt: skip
#: HAT's fixed feature scaling (``feature-norm`` in its predictor configs), same for every device and task.
HAT_FEATURE_NORM = (640.0, 6.0, 2048.0, 6.0, 640.0, 6.0, 2048.0, 6.0, 6.0, 2.0)

#: Names of the columns ``hat_derived_features`` appends to HAT's 10.
HAT_DERIVED = (
    "decoder_sum_embed",  # L_dec * d_dec: per-layer projections and norms
    "decoder_sum_ffn",  # L_dec * mean FFN width
    "decoder_sum_ffn_x_embed",  # L_dec * d_dec * mean FFN width: decoder FFN compute
    "decoder_sum_self_heads",
    "decoder_sum_ende_heads",
    "decoder_sum_attended",  # total encoder layers attended: encoder-decoder key/value length
    "decoder_sum_attended_x_encoder_embed",  # encoder-decoder K/V projection compute
    "encoder_sum_ffn_x_embed",  # L_enc * d_enc * mean FFN width: encoder FFN compute
)


_CATEGORICAL_HAT = frozenset({"encoder_embed_dim", "encoder_layer_num", "decoder_embed_dim", "decoder_layer_num"})
_CATEGORICAL_SLOT = ("_active", "_ffn", "_heads", "_attended")


def is_categorical(name: str) -> bool:
    """Whether a feature column takes one of a few choices (embed dims, layer numbers, per-layer choices) rather
    than a continuum (HAT's per-stack averages, MAC counts): a predictor has seen all the values it can use."""
    return name in _CATEGORICAL_HAT or (name.startswith(("encoder", "decoder")) and name[7:8].isdigit()
                                        and name.endswith(_CATEGORICAL_SLOT))


def hat_features(config: SubTransformerConfig) -> list[float]:
    """HAT's 10 features of ``config``, in the CSV's column order (see ``HAT_FEATURES``)."""

    def avg(values: tuple[int, ...]) -> float:
        return sum(values) / len(values)

    return [
        float(config.encoder_embed_dim),
        float(config.encoder_layer_num),
        avg(config.encoder_ffn_embed_dim),
        avg(config.encoder_self_attention_heads),
        float(config.decoder_embed_dim),
        float(config.decoder_layer_num),
        avg(config.decoder_ffn_embed_dim),
        avg(config.decoder_self_attention_heads),
        avg(config.decoder_ende_attention_heads),
        avg(tuple(ARBITRARY_ATTENDED[a] for a in config.decoder_arbitrary_ende_attn)),
    ]


def hat_derived_features(features: np.ndarray) -> np.ndarray:
    """``[N, 10]`` HAT features -> ``[N, 18]``: the 10 followed by the ``HAT_DERIVED`` columns."""
    x = np.atleast_2d(np.asarray(features, dtype=np.float64))
    if x.shape[1] != len(HAT_FEATURES):
        raise ValueError(f"expected {len(HAT_FEATURES)} HAT feature columns, got {x.shape[1]}")
    d_enc, l_enc, ffn_enc = x[:, 0], x[:, 1], x[:, 2]
    d_dec, l_dec, ffn_dec, self_h, ende_h, attended = (x[:, i] for i in range(4, 10))
    return np.column_stack([
        x, l_dec * d_dec, l_dec * ffn_dec, l_dec * d_dec * ffn_dec / 1e3, l_dec * self_h, l_dec * ende_h,
        l_dec * attended, l_dec * attended * d_enc, l_enc * d_enc * ffn_enc / 1e3,
    ])  # fmt: skip


# ---------------------------------------------------------------------------------------------- per-layer features
_ENC_SLOT = ("active", "ffn", "heads", "mmacs")
_DEC_SLOT = ("active", "ffn", "self_heads", "ende_heads", "attended", "mmacs")
_GLOBAL = ("encoder_embed_dim", "encoder_layer_num", "decoder_embed_dim", "decoder_layer_num", "output_mmacs")


def layer_feature_names(space: DesignSpace) -> tuple[str, ...]:
    """Column names of ``layer_features`` for ``space`` (its layer counts fix the length)."""
    enc = [f"encoder{i}_{k}" for i in range(space.encoder_layers) for k in _ENC_SLOT]
    dec = [f"decoder{i}_{k}" for i in range(space.decoder_layers) for k in _DEC_SLOT]
    return (*_GLOBAL, *enc, *dec)


def layer_features(config: SubTransformerConfig, space: DesignSpace, *, src_len: int = 30, tgt_len: int = 30,
                   vocab: int | None = None) -> list[float]:
    """Per-layer features of ``config`` in ``space`` (see ``layer_feature_names``).

    Globals (embed dims, layer numbers, output projection in millions of MACs, with ``vocab`` defaulting to the
    space's standard vocabulary), then per encoder slot [active, FFN, heads, MMACs] and per decoder slot
    [active, FFN, self heads, enc-dec heads, encoder layers attended, MMACs]; inactive slots are all zero.
    """
    for stack, depth, limit in (("encoder", config.encoder_layer_num, space.encoder_layers),
                                ("decoder", config.decoder_layer_num, space.decoder_layers)):
        if depth > limit:
            raise ConfigError(f"{depth} layers but the space {space.name!r} has {limit} {stack} layer slots",
                              field=f"{stack}-layer-num-subtransformer")
    vocab = default_vocab(space) if vocab is None else vocab
    enc_macs, dec_macs = layer_macs(config, space, src_len, tgt_len)
    out = [float(config.encoder_embed_dim), float(config.encoder_layer_num), float(config.decoder_embed_dim),
           float(config.decoder_layer_num), tgt_len * config.decoder_embed_dim * vocab / 1e6]
    for i in range(space.encoder_layers):
        if i < config.encoder_layer_num:
            out += [1.0, float(config.encoder_ffn_embed_dim[i]), float(config.encoder_self_attention_heads[i]),
                    enc_macs[i] / 1e6]
        else:
            out += [0.0] * len(_ENC_SLOT)
    for i in range(space.decoder_layers):
        if i < config.decoder_layer_num:
            out += [1.0, float(config.decoder_ffn_embed_dim[i]), float(config.decoder_self_attention_heads[i]),
                    float(config.decoder_ende_attention_heads[i]),
                    float(ARBITRARY_ATTENDED[config.decoder_arbitrary_ende_attn[i]]), dec_macs[i] / 1e6]
        else:
            out += [0.0] * len(_DEC_SLOT)
    return out
