"""The design space: the choices of every elastic dimension plus the SuperTransformer's maximum sizes.

A space is plain data loaded from YAML in HAT's own keys, so HAT's ``space0.yml`` loads as it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from dynhat.errors import ConfigError
from dynhat.io import read_yaml

#: Number of encoder layers each arbitrary encoder-decoder attention value attends to (HAT: -1, 1, 2).
ARBITRARY_ATTENDED = {-1: 1, 1: 2, 2: 3}

# HAT key -> DesignSpace attribute, for the maximum sizes and the choice lists.
_SIZE_KEYS = {
    "encoder-embed-dim": "encoder_embed_dim",
    "decoder-embed-dim": "decoder_embed_dim",
    "encoder-ffn-embed-dim": "encoder_ffn_embed_dim",
    "decoder-ffn-embed-dim": "decoder_ffn_embed_dim",
    "encoder-layers": "encoder_layers",
    "decoder-layers": "decoder_layers",
    "encoder-attention-heads": "encoder_attention_heads",
    "decoder-attention-heads": "decoder_attention_heads",
    "qkv-dim": "qkv_dim",
}
_CHOICE_KEYS = {
    "encoder-embed-choice": "encoder_embed_choice",
    "decoder-embed-choice": "decoder_embed_choice",
    "encoder-ffn-embed-dim-choice": "encoder_ffn_embed_dim_choice",
    "decoder-ffn-embed-dim-choice": "decoder_ffn_embed_dim_choice",
    "encoder-layer-num-choice": "encoder_layer_num_choice",
    "decoder-layer-num-choice": "decoder_layer_num_choice",
    "encoder-self-attention-heads-choice": "encoder_self_attention_heads_choice",
    "decoder-self-attention-heads-choice": "decoder_self_attention_heads_choice",
    "decoder-ende-attention-heads-choice": "decoder_ende_attention_heads_choice",
    "decoder-arbitrary-ende-attn-choice": "decoder_arbitrary_ende_attn_choice",
}
# dynhat's own keys: head-dim fixes the head width so fewer heads really cost less (HAT keeps qkv-dim fixed);
# normalize-before: pre-norm layers with a final norm per stack (HAT and fairseq's WMT models are post-norm).
_OWN_KEYS = {"name": "name", "head-dim": "head_dim", "description": "description",
             "normalize-before": "normalize_before"}
# HAT training/model settings that may sit in a space file; kept verbatim for the trainer's defaults.
HAT_SETTING_KEYS = frozenset(
    {
        "arch", "share-all-embeddings", "max-tokens", "data", "optimizer", "adam-betas", "clip-norm",
        "weight-decay", "dropout", "attention-dropout", "criterion", "label-smoothing", "ddp-backend", "fp16",
        "update-freq", "max-update", "warmup-updates", "lr-scheduler", "warmup-init-lr", "max-lr", "lr",
        "lr-shrink", "keep-last-epochs", "save-interval", "validate-interval", "max-epoch",
    }
)  # fmt: skip


@dataclass(frozen=True)
class DesignSpace:
    """Elastic dimensions (``*_choice``) and the SuperTransformer they are sliced from."""

    encoder_embed_dim: int
    decoder_embed_dim: int
    encoder_ffn_embed_dim: int
    decoder_ffn_embed_dim: int
    encoder_layers: int
    decoder_layers: int
    encoder_attention_heads: int
    decoder_attention_heads: int
    qkv_dim: int
    encoder_embed_choice: tuple[int, ...]
    decoder_embed_choice: tuple[int, ...]
    encoder_ffn_embed_dim_choice: tuple[int, ...]
    decoder_ffn_embed_dim_choice: tuple[int, ...]
    encoder_layer_num_choice: tuple[int, ...]
    decoder_layer_num_choice: tuple[int, ...]
    encoder_self_attention_heads_choice: tuple[int, ...]
    decoder_self_attention_heads_choice: tuple[int, ...]
    decoder_ende_attention_heads_choice: tuple[int, ...]
    decoder_arbitrary_ende_attn_choice: tuple[int, ...]
    head_dim: int | None = None
    normalize_before: bool = False
    name: str = "custom"
    description: str = ""
    settings: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        self._validate()

    # ------------------------------------------------------------------ loading / saving
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str | None = None) -> DesignSpace:
        if not isinstance(data, Mapping):
            raise ConfigError(f"expected a mapping of HAT keys, got {type(data).__name__}", source=source)
        kwargs: dict[str, Any] = {}
        settings: dict[str, Any] = {}
        for key, value in data.items():
            if key in _SIZE_KEYS:
                kwargs[_SIZE_KEYS[key]] = _as_int(value, key, source)
            elif key in _CHOICE_KEYS:
                kwargs[_CHOICE_KEYS[key]] = _as_int_tuple(value, key, source)
            elif key in _OWN_KEYS:
                attr = _OWN_KEYS[key]
                kwargs[attr] = (_as_int(value, key, source) if attr == "head_dim"
                                else _as_bool(value, key, source) if attr == "normalize_before" else str(value))
            elif key in HAT_SETTING_KEYS:
                settings[key] = value
            else:
                allowed = sorted([*_SIZE_KEYS, *_CHOICE_KEYS, *_OWN_KEYS])
                raise ConfigError(f"unknown key; expected one of {allowed} or a HAT training setting",
                                  source=source, field=str(key))
        missing = [k for k, a in {**_SIZE_KEYS, **_CHOICE_KEYS}.items() if a not in kwargs]
        if missing:
            raise ConfigError(f"missing required keys {missing}", source=source)
        try:
            return cls(**kwargs, settings=settings)
        except ConfigError as err:
            if source is None:
                raise
            raise ConfigError(str(err), source=source) from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> DesignSpace:
        path = Path(path)
        data = read_yaml(path, "design space YAML")
        space = cls.from_dict(data, source=str(path))
        if "name" not in data:
            object.__setattr__(space, "name", path.stem)
        return space

    def to_dict(self) -> dict[str, Any]:
        """HAT keys (plus dynhat's own where set), suitable for ``yaml.safe_dump``."""
        out: dict[str, Any] = {"name": self.name}
        if self.description:
            out["description"] = self.description
        out.update({k: getattr(self, a) for k, a in _SIZE_KEYS.items()})
        if self.head_dim is not None:
            out["head-dim"] = self.head_dim
        if self.normalize_before:
            out["normalize-before"] = True
        out.update({k: list(getattr(self, a)) for k, a in _CHOICE_KEYS.items()})
        out.update(self.settings)
        return out

    def save_yaml(self, path: str | Path) -> None:
        from dynhat.io import atomic_write_text

        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))

    # ------------------------------------------------------------------ derived facts
    @property
    def choice_fields(self) -> dict[str, tuple[int, ...]]:
        """HAT choice key -> choices, in HAT's order."""
        return {k: getattr(self, a) for k, a in _CHOICE_KEYS.items()}

    def qkv_width(self, heads: int) -> int:
        """Width of the Q/K/V projections for ``heads`` heads: fixed in HAT, proportional with ``head-dim``."""
        return self.qkv_dim if self.head_dim is None else heads * self.head_dim

    def head_width(self, heads: int) -> int:
        return self.qkv_dim // heads if self.head_dim is None else self.head_dim

    def num_configurations(self) -> int:
        """Exact number of distinct SubTransformers.

        Two configurations differ when any *active* value differs; values of layers beyond the active depth
        do not exist. So a stack of depth L contributes (product of per-layer choice counts)^L, summed over the
        depth choices, and the embedding choices multiply in.
        """
        enc_layer = len(self.encoder_ffn_embed_dim_choice) * len(self.encoder_self_attention_heads_choice)
        dec_layer = (
            len(self.decoder_ffn_embed_dim_choice)
            * len(self.decoder_self_attention_heads_choice)
            * len(self.decoder_ende_attention_heads_choice)
            * len(self.decoder_arbitrary_ende_attn_choice)
        )
        enc = sum(enc_layer**n for n in self.encoder_layer_num_choice)
        dec = sum(dec_layer**n for n in self.decoder_layer_num_choice)
        return len(self.encoder_embed_choice) * len(self.decoder_embed_choice) * enc * dec

    # ------------------------------------------------------------------ validation
    def _validate(self) -> None:
        for key, attr in _SIZE_KEYS.items():
            if getattr(self, attr) <= 0:
                raise ConfigError(f"must be positive, got {getattr(self, attr)}", field=key)
        limits = {
            "encoder-embed-choice": self.encoder_embed_dim,
            "decoder-embed-choice": self.decoder_embed_dim,
            "encoder-ffn-embed-dim-choice": self.encoder_ffn_embed_dim,
            "decoder-ffn-embed-dim-choice": self.decoder_ffn_embed_dim,
            "encoder-layer-num-choice": self.encoder_layers,
            "decoder-layer-num-choice": self.decoder_layers,
            "encoder-self-attention-heads-choice": self.encoder_attention_heads,
            "decoder-self-attention-heads-choice": self.decoder_attention_heads,
            "decoder-ende-attention-heads-choice": self.decoder_attention_heads,
        }
        for key, choices in self.choice_fields.items():
            if not choices:
                raise ConfigError("needs at least one choice", field=key)
            if len(set(choices)) != len(choices):
                raise ConfigError(f"repeated choices in {list(choices)}", field=key)
            if key in limits:
                bad = [c for c in choices if not 0 < c <= limits[key]]
                if bad:
                    raise ConfigError(f"choices {bad} outside 1..{limits[key]} (the SuperTransformer's size)",
                                      field=key)
        bad_arb = [c for c in self.decoder_arbitrary_ende_attn_choice if c not in ARBITRARY_ATTENDED]
        if bad_arb:
            raise ConfigError(f"choices {bad_arb} not in {sorted(ARBITRARY_ATTENDED)}",
                              field="decoder-arbitrary-ende-attn-choice")
        deepest = max(ARBITRARY_ATTENDED[c] for c in self.decoder_arbitrary_ende_attn_choice)
        if deepest > min(self.encoder_layer_num_choice):
            raise ConfigError(f"attends to {deepest} encoder layers but the encoder may have only "
                              f"{min(self.encoder_layer_num_choice)}", field="decoder-arbitrary-ende-attn-choice")
        head_keys = ("encoder-self-attention-heads-choice", "decoder-self-attention-heads-choice",
                     "decoder-ende-attention-heads-choice")
        for key in head_keys:
            for heads in self.choice_fields[key]:
                if self.head_dim is None and self.qkv_dim % heads:
                    raise ConfigError(f"{heads} heads do not divide qkv-dim {self.qkv_dim}", field=key)
                if self.head_dim is not None and heads * self.head_dim > self.qkv_dim:
                    raise ConfigError(f"{heads} heads x head-dim {self.head_dim} exceed qkv-dim {self.qkv_dim}",
                                      field=key)

    def __str__(self) -> str:
        return f"DesignSpace({self.name}, {self.num_configurations():.3e} configurations)"


def _as_int(value: Any, key: str, source: str | None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"expected an integer, got {value!r}", source=source, field=key)
    return value


def _as_bool(value: Any, key: str, source: str | None) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"expected true or false, got {value!r}", source=source, field=key)
    return value


def _as_int_tuple(value: Any, key: str, source: str | None) -> tuple[int, ...]:
    if not isinstance(value, list | tuple):
        raise ConfigError(f"expected a list of integers, got {value!r}", source=source, field=key)
    return tuple(_as_int(v, key, source) for v in value)


SHIPPED_SPACES = ("hat-wmt14-en-de", "multi30k-cpu", "multi30k-cpu-fixedhead", "multi30k-tiny",
                  "multi30k-tiny-prenorm")


def load_space(name_or_path: str | Path) -> DesignSpace:
    """A shipped space by name (see ``SHIPPED_SPACES``) or any HAT-style space YAML by path."""
    text = str(name_or_path)
    if text in SHIPPED_SPACES:
        ref = resources.files("dynhat.space") / "spaces" / f"{text}.yml"
        with resources.as_file(ref) as path:
            return DesignSpace.from_yaml(path)
    path = Path(text)
    if not path.exists():
        raise ConfigError(f"no such file, and not a shipped space name (shipped: {list(SHIPPED_SPACES)})",
                          source=text)
    return DesignSpace.from_yaml(path)

