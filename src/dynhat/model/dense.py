"""Extraction: a standalone dense model of one SubTransformer (own contiguous weights, plain modules).

It is the deployment artefact (a file that needs no SuperTransformer) and the reference for speed: the
inherited SubTransformer must run as fast as this.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from dynhat.io import atomic_write
from dynhat.model import weights as mw
from dynhat.model.seq2seq import Seq2SeqModel
from dynhat.model.supertransformer import SuperTransformer, column_major_embedding
from dynhat.space.config import SubTransformerConfig

FORMAT = "dynhat-dense-1"


class DenseAttention(nn.Module):
    """``in_proj`` packs Q,K,V (self-attention) or holds Q only (cross-attention, with ``kv_proj``)."""

    def __init__(self, d_q: int, d_kv: int | None, heads: int, head_dim: int, heads_major: bool) -> None:
        super().__init__()
        width = heads * head_dim
        self.heads, self.head_dim, self.heads_major = heads, head_dim, heads_major
        self.in_proj = nn.Linear(d_q, width if d_kv is not None else 3 * width)
        self.kv_proj = nn.Linear(d_kv, 2 * width) if d_kv is not None else None
        self.out_proj = nn.Linear(width, d_q)

    def weights(self) -> mw.AttentionWeights:
        kv = self.kv_proj
        return mw.AttentionWeights(self.in_proj.weight, self.in_proj.bias, None if kv is None else kv.weight,
                                   None if kv is None else kv.bias, self.out_proj.weight, self.out_proj.bias,
                                   self.heads, self.head_dim, self.heads_major)


def _norm(ln: nn.LayerNorm) -> mw.NormWeights:
    return mw.NormWeights(ln.weight, ln.bias)


class DenseEncoderLayer(nn.Module):
    def __init__(self, d: int, f: int, heads: int, head_dim: int, heads_major: bool) -> None:
        super().__init__()
        self.self_attn = DenseAttention(d, None, heads, head_dim, heads_major)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.fc1, self.fc2 = nn.Linear(d, f), nn.Linear(f, d)
        self.final_layer_norm = nn.LayerNorm(d)

    def weights(self) -> mw.EncoderLayerWeights:
        return mw.EncoderLayerWeights(self.self_attn.weights(), _norm(self.self_attn_layer_norm),
                                      mw.FeedForwardWeights(self.fc1.weight, self.fc1.bias, self.fc2.weight,
                                                            self.fc2.bias),
                                      _norm(self.final_layer_norm))


class DenseDecoderLayer(nn.Module):
    def __init__(self, d: int, d_enc: int, f: int, self_heads: int, cross_heads: int, head_dims: tuple[int, int],
                 heads_major: bool, attended: int) -> None:
        super().__init__()
        self.attended = attended
        self.self_attn = DenseAttention(d, None, self_heads, head_dims[0], heads_major)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.encoder_attn = DenseAttention(d, d_enc, cross_heads, head_dims[1], heads_major)
        self.encoder_attn_layer_norm = nn.LayerNorm(d)
        self.fc1, self.fc2 = nn.Linear(d, f), nn.Linear(f, d)
        self.final_layer_norm = nn.LayerNorm(d)

    def weights(self) -> mw.DecoderLayerWeights:
        return mw.DecoderLayerWeights(self.self_attn.weights(), _norm(self.self_attn_layer_norm),
                                      self.encoder_attn.weights(), _norm(self.encoder_attn_layer_norm),
                                      mw.FeedForwardWeights(self.fc1.weight, self.fc1.bias, self.fc2.weight,
                                                            self.fc2.bias),
                                      _norm(self.final_layer_norm), self.attended)


class DenseTransformer(Seq2SeqModel):
    """One fixed SubTransformer as an ordinary model. ``spec`` rebuilds it; ``save``/``load`` are self-contained."""

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__()
        self.spec = spec
        self.config = SubTransformerConfig.from_dict(spec["config"])
        c = self.config
        self.padding_idx, self.eos_idx = spec["padding_idx"], spec["eos_idx"]
        hd, major = spec["head_dims"], spec["heads_major"]
        width = max(c.encoder_embed_dim, c.decoder_embed_dim)
        self.embed_tokens = column_major_embedding(spec["vocab_size"], width, self.padding_idx)
        self.encoder_layers = nn.ModuleList(
            DenseEncoderLayer(c.encoder_embed_dim, f, h, hd["encoder"][i], major)
            for i, (f, h) in enumerate(zip(c.encoder_ffn_embed_dim, c.encoder_self_attention_heads, strict=True)))
        self.decoder_layers = nn.ModuleList(
            DenseDecoderLayer(c.decoder_embed_dim, c.encoder_embed_dim, c.decoder_ffn_embed_dim[i],
                              c.decoder_self_attention_heads[i], c.decoder_ende_attention_heads[i],
                              (hd["decoder_self"][i], hd["decoder_cross"][i]), major, spec["attended"][i])
            for i in range(c.decoder_layer_num))
        pre = spec.get("normalize_before", False)
        self.encoder_norm = nn.LayerNorm(c.encoder_embed_dim) if pre else None
        self.decoder_norm = nn.LayerNorm(c.decoder_embed_dim) if pre else None
        self.register_buffer("encoder_positions", torch.zeros(spec["num_positions"], c.encoder_embed_dim))
        self.register_buffer("decoder_positions", torch.zeros(spec["num_positions"], c.decoder_embed_dim))
        self._weights: mw.SubTransformerWeights | None = None

    def weights(self, config: SubTransformerConfig | None = None) -> mw.SubTransformerWeights:
        if config is not None and config != self.config:
            raise ValueError(f"this dense model is {self.config.id}; it cannot run {config.id}")
        if self._weights is None:
            c, s = self.config, self.spec
            table = self.embed_tokens.weight
            self._weights = mw.SubTransformerWeights(
                config=c,
                encoder_embed=table if c.encoder_embed_dim == table.shape[1] else table[:, : c.encoder_embed_dim],
                decoder_embed=table if c.decoder_embed_dim == table.shape[1] else table[:, : c.decoder_embed_dim],
                encoder_positions=self.encoder_positions, decoder_positions=self.decoder_positions,
                encoder=tuple(layer.weights() for layer in self.encoder_layers),
                decoder=tuple(layer.weights() for layer in self.decoder_layers),
                encoder_dropout=s["encoder_dropout"], decoder_dropout=s["decoder_dropout"],
                attention_dropout=s["attention_dropout"], padding_idx=self.padding_idx,
                encoder_norm=None if self.encoder_norm is None else _norm(self.encoder_norm),
                decoder_norm=None if self.decoder_norm is None else _norm(self.decoder_norm))
        return self._weights

    def _apply(self, fn, recurse: bool = True):  # type: ignore[no-untyped-def]
        self._weights = None
        return super()._apply(fn, recurse)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def save(self, path: str | Path) -> None:
        payload = {"format": FORMAT, "spec": self.spec, "state_dict": self.state_dict()}
        atomic_write(path, lambda handle: torch.save(payload, handle))

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> DenseTransformer:
        payload = torch.load(path, map_location=map_location, weights_only=True)
        if payload.get("format") != FORMAT:
            raise ValueError(f"{path}: not a dynhat dense model (format {payload.get('format')!r}, "
                             f"expected {FORMAT!r})")
        model = cls(payload["spec"])
        model.load_state_dict(payload["state_dict"])
        return model


@torch.no_grad()
def extract(model: SuperTransformer, config: SubTransformerConfig) -> DenseTransformer:
    """Copy ``config``'s slices out of ``model`` into a dense model that computes the same function."""
    w = model.weights(config)
    space = model.space
    spec: dict[str, Any] = {
        "config": config.to_dict(),
        "vocab_size": model.settings.vocab_size,
        "padding_idx": model.padding_idx,
        "eos_idx": model.eos_idx,
        "heads_major": space.head_dim is not None,
        "head_dims": {
            "encoder": [layer.self_attn.head_dim for layer in w.encoder],
            "decoder_self": [layer.self_attn.head_dim for layer in w.decoder],
            "decoder_cross": [layer.cross_attn.head_dim for layer in w.decoder],
        },
        "attended": [layer.attended for layer in w.decoder],
        "num_positions": w.encoder_positions.shape[0],
        "encoder_dropout": w.encoder_dropout,
        "decoder_dropout": w.decoder_dropout,
        "attention_dropout": w.attention_dropout,
        "space": space.name,
        "normalize_before": space.normalize_before,
    }
    dense = DenseTransformer(spec).to(w.encoder_embed.device)
    width = dense.embed_tokens.weight.shape[1]
    sources: list[tuple[Tensor, Tensor]] = [
        (dense.embed_tokens.weight, model.encoder.embed_tokens.weight[:, :width]),
        (dense.encoder_positions, w.encoder_positions),
        (dense.decoder_positions, w.decoder_positions),
    ]
    for layer, lw in zip(dense.encoder_layers, w.encoder, strict=True):
        sources += _pairs(layer.weights(), lw)
    for layer, lw in zip(dense.decoder_layers, w.decoder, strict=True):
        sources += _pairs(layer.weights(), lw)
    dense_w = dense.weights()
    for dst_norm, src_norm in ((dense_w.encoder_norm, w.encoder_norm), (dense_w.decoder_norm, w.decoder_norm)):
        if dst_norm is not None:
            sources += _pairs(dst_norm, src_norm)
    for dst, src in sources:
        dst.copy_(src)
    dense.train(model.training)
    return dense


def _pairs(dst: object, src: object) -> list[tuple[Tensor, Tensor]]:
    """Matching tensors of two weight records of the same type (dense destination, elastic source)."""
    out: list[tuple[Tensor, Tensor]] = []
    for name in dst.__slots__:  # type: ignore[attr-defined]
        a, b = getattr(dst, name), getattr(src, name)
        if isinstance(a, Tensor):
            out.append((a, b))
        elif hasattr(a, "__slots__"):
            out += _pairs(a, b)
    return out
