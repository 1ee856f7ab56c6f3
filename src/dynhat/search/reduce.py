"""Design-space reduction (step 5 of the method): keep only the choices that a device family's operating points use.

For each elastic dimension, count how often the winners take each choice (per layer for per-layer dimensions, as
the paper's Jetson analysis does); the reduced space keeps the used choices and shrinks the SuperTransformer to the
largest of them, so a new SuperTransformer trained on it spends its capacity where the family needs it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace

from dynhat.errors import ConfigError
from dynhat.space.config import SubTransformerConfig
from dynhat.space.space import DesignSpace

# choice field -> the SubTransformerConfig attribute holding its value(s)
_DIMENSIONS = {
    "encoder_embed_choice": "encoder_embed_dim",
    "decoder_embed_choice": "decoder_embed_dim",
    "encoder_ffn_embed_dim_choice": "encoder_ffn_embed_dim",
    "decoder_ffn_embed_dim_choice": "decoder_ffn_embed_dim",
    "encoder_layer_num_choice": "encoder_layer_num",
    "decoder_layer_num_choice": "decoder_layer_num",
    "encoder_self_attention_heads_choice": "encoder_self_attention_heads",
    "decoder_self_attention_heads_choice": "decoder_self_attention_heads",
    "decoder_ende_attention_heads_choice": "decoder_ende_attention_heads",
    "decoder_arbitrary_ende_attn_choice": "decoder_arbitrary_ende_attn",
}


@dataclass(frozen=True)
class DimensionUse:
    dimension: str
    choices: tuple[int, ...]
    counts: dict[int, int]  # choice -> times used (layers count separately)

    @property
    def used(self) -> tuple[int, ...]:
        return tuple(c for c in self.choices if self.counts.get(c, 0) > 0)

    @property
    def dropped(self) -> tuple[int, ...]:
        return tuple(c for c in self.choices if self.counts.get(c, 0) == 0)


def usage(space: DesignSpace, configs: Sequence[SubTransformerConfig]) -> list[DimensionUse]:
    if not configs:
        raise ConfigError("no operating points to reduce the space from")
    out = []
    for field_name, attr in _DIMENSIONS.items():
        counts: Counter[int] = Counter()
        for config in configs:
            value = getattr(config, attr)
            counts.update(value if isinstance(value, tuple) else (value,))
        out.append(DimensionUse(field_name, getattr(space, field_name), dict(counts)))
    return out


def reduce_space(space: DesignSpace, configs: Sequence[SubTransformerConfig], name: str | None = None
                 ) -> DesignSpace:
    """``space`` restricted to the choices ``configs`` use, with the SuperTransformer shrunk to fit them."""
    kept = {u.dimension: u.used for u in usage(space, configs)}
    sizes = {
        "encoder_embed_dim": max(kept["encoder_embed_choice"]),
        "decoder_embed_dim": max(kept["decoder_embed_choice"]),
        "encoder_ffn_embed_dim": max(kept["encoder_ffn_embed_dim_choice"]),
        "decoder_ffn_embed_dim": max(kept["decoder_ffn_embed_dim_choice"]),
        "encoder_layers": max(kept["encoder_layer_num_choice"]),
        "decoder_layers": max(kept["decoder_layer_num_choice"]),
        "encoder_attention_heads": max(kept["encoder_self_attention_heads_choice"]),
        "decoder_attention_heads": max(kept["decoder_self_attention_heads_choice"]
                                       + kept["decoder_ende_attention_heads_choice"]),
    }
    return replace(space, **kept, **sizes, name=name or f"{space.name}-reduced",
                   description=f"{space.name} reduced to the choices of {len(configs)} operating points")
