"""A SubTransformer configuration: per-layer values exactly as HAT stores them, with HAT's YAML keys."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dynhat.errors import ConfigError
from dynhat.io import read_yaml
from dynhat.space.space import ARBITRARY_ATTENDED, DesignSpace

# HAT SubTransformer YAML key -> attribute. Scalars first, then per-layer lists.
HAT_KEYS = {
    "encoder-embed-dim-subtransformer": "encoder_embed_dim",
    "encoder-layer-num-subtransformer": "encoder_layer_num",
    "encoder-ffn-embed-dim-all-subtransformer": "encoder_ffn_embed_dim",
    "encoder-self-attention-heads-all-subtransformer": "encoder_self_attention_heads",
    "decoder-embed-dim-subtransformer": "decoder_embed_dim",
    "decoder-layer-num-subtransformer": "decoder_layer_num",
    "decoder-ffn-embed-dim-all-subtransformer": "decoder_ffn_embed_dim",
    "decoder-self-attention-heads-all-subtransformer": "decoder_self_attention_heads",
    "decoder-ende-attention-heads-all-subtransformer": "decoder_ende_attention_heads",
    "decoder-arbitrary-ende-attn-all-subtransformer": "decoder_arbitrary_ende_attn",
}
_ATTR_TO_KEY = {a: k for k, a in HAT_KEYS.items()}
ENCODER_LISTS = ("encoder_ffn_embed_dim", "encoder_self_attention_heads")
DECODER_LISTS = (
    "decoder_ffn_embed_dim",
    "decoder_self_attention_heads",
    "decoder_ende_attention_heads",
    "decoder_arbitrary_ende_attn",
)
# Which space choice list each configuration field is checked against.
_CHOICE_OF = {
    "encoder_embed_dim": "encoder_embed_choice",
    "encoder_layer_num": "encoder_layer_num_choice",
    "encoder_ffn_embed_dim": "encoder_ffn_embed_dim_choice",
    "encoder_self_attention_heads": "encoder_self_attention_heads_choice",
    "decoder_embed_dim": "decoder_embed_choice",
    "decoder_layer_num": "decoder_layer_num_choice",
    "decoder_ffn_embed_dim": "decoder_ffn_embed_dim_choice",
    "decoder_self_attention_heads": "decoder_self_attention_heads_choice",
    "decoder_ende_attention_heads": "decoder_ende_attention_heads_choice",
    "decoder_arbitrary_ende_attn": "decoder_arbitrary_ende_attn_choice",
}
# Keys that may sit in a HAT SubTransformer file beside the architecture (common.yml is merged into them).
_IGNORED_HAT_KEYS = frozenset({"train-subtransformer"})


@dataclass(frozen=True)
class SubTransformerConfig:
    """One SubTransformer. Per-layer tuples have exactly ``*_layer_num`` entries (active layers only)."""

    encoder_embed_dim: int
    encoder_layer_num: int
    encoder_ffn_embed_dim: tuple[int, ...]
    encoder_self_attention_heads: tuple[int, ...]
    decoder_embed_dim: int
    decoder_layer_num: int
    decoder_ffn_embed_dim: tuple[int, ...]
    decoder_self_attention_heads: tuple[int, ...]
    decoder_ende_attention_heads: tuple[int, ...]
    decoder_arbitrary_ende_attn: tuple[int, ...]

    def __post_init__(self) -> None:
        for attr in (*ENCODER_LISTS, *DECODER_LISTS):
            object.__setattr__(self, attr, tuple(getattr(self, attr)))
        for attr, depth in [(a, self.encoder_layer_num) for a in ENCODER_LISTS] + [
            (a, self.decoder_layer_num) for a in DECODER_LISTS
        ]:
            values = getattr(self, attr)
            if len(values) != depth:
                layer_field = "encoder" if attr in ENCODER_LISTS else "decoder"
                raise ConfigError(
                    f"has {len(values)} entries but {layer_field}-layer-num-subtransformer is {depth}; "
                    "expected one entry per active layer",
                    field=_ATTR_TO_KEY[attr],
                )
        for attr in (*ENCODER_LISTS, *DECODER_LISTS):
            for value in getattr(self, attr):
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ConfigError(f"expected integers, got {value!r}", field=_ATTR_TO_KEY[attr])

    # ------------------------------------------------------------------ identity
    @functools.cached_property
    def id(self) -> str:
        """Short, stable id: readable prefix (embed dims, decoder depth) + 8 hex digits of the full content.
        Computed once (a configuration is immutable): the runtime names the point of every request with it."""
        digest = hashlib.sha1(repr(self.as_tuple()).encode()).hexdigest()[:8]
        return f"e{self.encoder_embed_dim}d{self.decoder_embed_dim}L{self.decoder_layer_num}-{digest}"

    def as_tuple(self) -> tuple[Any, ...]:
        return tuple(getattr(self, a) for a in HAT_KEYS.values())

    # ------------------------------------------------------------------ HAT YAML
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str | None = None) -> SubTransformerConfig:
        """Build from HAT's SubTransformer keys; unknown keys are an error (a typo would silently change the model)."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"expected a mapping of HAT keys, got {type(data).__name__}", source=source)
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key in _IGNORED_HAT_KEYS:
                continue
            if key not in HAT_KEYS:
                raise ConfigError(f"unknown key; expected one of {list(HAT_KEYS)}", source=source, field=str(key))
            attr = HAT_KEYS[key]
            if attr in ENCODER_LISTS or attr in DECODER_LISTS:
                if not isinstance(value, list | tuple):
                    raise ConfigError(f"expected a list (one value per layer), got {value!r}",
                                      source=source, field=key)
                kwargs[attr] = tuple(value)
            else:
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ConfigError(f"expected an integer, got {value!r}", source=source, field=key)
                kwargs[attr] = value
        missing = [k for k, a in HAT_KEYS.items() if a not in kwargs]
        if missing:
            raise ConfigError(f"missing required keys {missing}", source=source)
        try:
            return cls(**kwargs)
        except ConfigError as err:
            raise ConfigError(str(err), source=source) from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> SubTransformerConfig:
        path = Path(path)
        return cls.from_dict(read_yaml(path, "SubTransformer YAML"), source=str(path))

    def to_dict(self) -> dict[str, Any]:
        """HAT's keys and layout: scalars as ints, per-layer values as lists."""
        return {k: (list(v) if isinstance(v := getattr(self, a), tuple) else v) for k, a in HAT_KEYS.items()}

    def save_yaml(self, path: str | Path) -> None:
        from dynhat.io import atomic_write_text

        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None))

    # ------------------------------------------------------------------ validation against a space
    def validate(self, space: DesignSpace, source: str | None = None) -> SubTransformerConfig:
        """Raise ConfigError naming the first field outside ``space``; return self so calls chain."""
        for attr in ("encoder_self_attention_heads", "decoder_self_attention_heads", "decoder_ende_attention_heads"):
            for i, heads in enumerate(getattr(self, attr)):
                if heads <= 0 or (space.head_dim is None and space.qkv_dim % heads):
                    raise ConfigError(f"{heads} heads do not divide qkv-dim {space.qkv_dim}", source=source,
                                      field=f"{_ATTR_TO_KEY[attr]}[{i}]")
        for attr, choice_attr in _CHOICE_OF.items():
            allowed = getattr(space, choice_attr)
            value = getattr(self, attr)
            for i, v in enumerate(value if isinstance(value, tuple) else (value,)):
                if v not in allowed:
                    where = f"{_ATTR_TO_KEY[attr]}[{i}]" if isinstance(value, tuple) else _ATTR_TO_KEY[attr]
                    raise ConfigError(f"{v} is not in the space's choices {list(allowed)}", source=source,
                                      field=where)
        for i, arb in enumerate(self.decoder_arbitrary_ende_attn):
            if ARBITRARY_ATTENDED[arb] > self.encoder_layer_num:
                raise ConfigError(f"{arb} attends to {ARBITRARY_ATTENDED[arb]} encoder layers but the encoder has "
                                  f"{self.encoder_layer_num}", source=source,
                                  field=f"decoder-arbitrary-ende-attn-all-subtransformer[{i}]")
        return self

    def describe(self) -> str:
        return (
            f"{self.id}: enc {self.encoder_embed_dim}x{self.encoder_layer_num} ffn {list(self.encoder_ffn_embed_dim)} "
            f"heads {list(self.encoder_self_attention_heads)} | dec {self.decoder_embed_dim}x{self.decoder_layer_num} "
            f"ffn {list(self.decoder_ffn_embed_dim)} self {list(self.decoder_self_attention_heads)} "
            f"ende {list(self.decoder_ende_attention_heads)} arb {list(self.decoder_arbitrary_ende_attn)}"
        )
