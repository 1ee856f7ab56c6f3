"""Operations on configurations that training and search need: sampling, extremes (and picking one by name),
HAT's genes, mutation, crossover."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator
from pathlib import Path

from dynhat.errors import ConfigError
from dynhat.space.config import DECODER_LISTS, ENCODER_LISTS, SubTransformerConfig
from dynhat.space.space import DesignSpace

# HAT's gene layout: scalar genes and per-layer genes (one per SuperTransformer layer), in this order.
_GENE_LAYOUT: tuple[tuple[str, str, str | None], ...] = (
    ("encoder_embed_dim", "encoder_embed_choice", None),
    ("encoder_layer_num", "encoder_layer_num_choice", None),
    ("encoder_ffn_embed_dim", "encoder_ffn_embed_dim_choice", "encoder"),
    ("encoder_self_attention_heads", "encoder_self_attention_heads_choice", "encoder"),
    ("decoder_embed_dim", "decoder_embed_choice", None),
    ("decoder_layer_num", "decoder_layer_num_choice", None),
    ("decoder_ffn_embed_dim", "decoder_ffn_embed_dim_choice", "decoder"),
    ("decoder_self_attention_heads", "decoder_self_attention_heads_choice", "decoder"),
    ("decoder_ende_attention_heads", "decoder_ende_attention_heads_choice", "decoder"),
    ("decoder_arbitrary_ende_attn", "decoder_arbitrary_ende_attn_choice", "decoder"),
)

Gene = tuple[int, ...]


def _depth(space: DesignSpace, stack: str) -> int:
    return space.encoder_layers if stack == "encoder" else space.decoder_layers


def sample(space: DesignSpace, rng: random.Random) -> SubTransformerConfig:
    """HAT's uniform sampling: every dimension drawn independently and uniformly from its choices."""
    values: dict[str, object] = {}
    for attr, choice_attr, stack in _GENE_LAYOUT:
        choices = getattr(space, choice_attr)
        if stack is None:
            values[attr] = rng.choice(choices)
    for attr, choice_attr, stack in _GENE_LAYOUT:
        if stack is not None:
            depth = values[f"{stack}_layer_num"]
            values[attr] = tuple(rng.choice(getattr(space, choice_attr)) for _ in range(depth))  # type: ignore[arg-type]
    return SubTransformerConfig(**values)  # type: ignore[arg-type]


def _pick_each(space: DesignSpace, pick: Callable[[tuple[int, ...]], int]) -> SubTransformerConfig:
    values: dict[str, object] = {}
    for attr, choice_attr, stack in _GENE_LAYOUT:
        if stack is None:
            values[attr] = pick(getattr(space, choice_attr))
    for attr, choice_attr, stack in _GENE_LAYOUT:
        if stack is not None:
            values[attr] = (pick(getattr(space, choice_attr)),) * values[f"{stack}_layer_num"]  # type: ignore[operator]
    return SubTransformerConfig(**values)  # type: ignore[arg-type]


def largest(space: DesignSpace) -> SubTransformerConfig:
    """Every dimension at its largest choice (arbitrary attention to the most encoder layers)."""
    return _pick_each(space, max)


def smallest(space: DesignSpace) -> SubTransformerConfig:
    """Every dimension at its smallest choice (one decoder layer attending to the last encoder layer)."""
    return _pick_each(space, min)


def middle(space: DesignSpace) -> SubTransformerConfig:
    """The middle element of every sorted choice list: a fixed reference between the extremes."""
    return _pick_each(space, lambda choices: sorted(choices)[len(choices) // 2])


NAMED: dict[str, Callable[[DesignSpace], SubTransformerConfig]] = {"largest": largest, "smallest": smallest,
                                                                   "middle": middle}


def resolve_config(spec: str, space: DesignSpace) -> SubTransformerConfig:
    """``largest``/``smallest``/``middle``, a HAT SubTransformer YAML, or the id of one of the named ones: how
    every command names the SubTransformer it works on."""
    if spec in NAMED:
        return NAMED[spec](space)
    if Path(spec).is_file():
        return SubTransformerConfig.from_yaml(spec).validate(space, source=spec)
    for make in NAMED.values():
        if make(space).id == spec:
            return make(space)
    raise ConfigError(f"not a file, not one of {list(NAMED)} and not the id of one of them", field=spec)


def ladder(space: DesignSpace, n: int) -> list[SubTransformerConfig]:
    """``n`` SubTransformers from the smallest to the largest, every dimension moving up its sorted choices together.

    Fixed probes of the whole range (for comparing training recipes) and the nested sizes of ladder training;
    ``ladder(space, 2)`` is ``[smallest, largest]``.
    """
    if n < 2:
        raise ValueError(f"a ladder needs at least 2 rungs, got {n}")

    def rung(i: int) -> SubTransformerConfig:
        return _pick_each(space, lambda choices: sorted(choices)[round(i * (len(choices) - 1) / (n - 1))])

    return [rung(i) for i in range(n)]


def gene_choices(space: DesignSpace) -> list[tuple[int, ...]]:
    """Choices of each gene position (HAT's 40-gene layout for a 6+6 SuperTransformer)."""
    out: list[tuple[int, ...]] = []
    for _attr, choice_attr, stack in _GENE_LAYOUT:
        out.extend([getattr(space, choice_attr)] * (1 if stack is None else _depth(space, stack)))
    return out


def to_gene(config: SubTransformerConfig, space: DesignSpace) -> Gene:
    """Flat gene; positions beyond the active depth repeat layer 0's value, as HAT's converter does."""
    gene: list[int] = []
    for attr, _choice_attr, stack in _GENE_LAYOUT:
        value = getattr(config, attr)
        if stack is None:
            gene.append(value)
        else:
            gene.extend(value + (value[0],) * (_depth(space, stack) - len(value)))
    return tuple(gene)


def from_gene(gene: Gene, space: DesignSpace) -> SubTransformerConfig:
    """Inverse of ``to_gene``: per-layer genes past the active depth are inert and dropped."""
    values: dict[str, object] = {}
    pos = 0
    slices: dict[str, tuple[int, ...]] = {}
    for attr, _choice_attr, stack in _GENE_LAYOUT:
        width = 1 if stack is None else _depth(space, stack)
        chunk = tuple(gene[pos : pos + width])
        pos += width
        if stack is None:
            values[attr] = chunk[0]
        else:
            slices[attr] = chunk
    for attr in ENCODER_LISTS:
        values[attr] = slices[attr][: values["encoder_layer_num"]]  # type: ignore[misc]
    for attr in DECODER_LISTS:
        values[attr] = slices[attr][: values["decoder_layer_num"]]  # type: ignore[misc]
    return SubTransformerConfig(**values)  # type: ignore[arg-type]


def mutate(config: SubTransformerConfig, space: DesignSpace, prob: float, rng: random.Random) -> SubTransformerConfig:
    """HAT's mutation: each gene (inert ones too) is redrawn uniformly with probability ``prob``."""
    gene = [rng.choice(choices) if rng.random() < prob else g
            for g, choices in zip(to_gene(config, space), gene_choices(space), strict=True)]
    return from_gene(tuple(gene), space)


def crossover(a: SubTransformerConfig, b: SubTransformerConfig, space: DesignSpace,
              rng: random.Random) -> SubTransformerConfig:
    """HAT's crossover: each gene taken from either parent with probability 0.5."""
    gene = [ga if rng.random() < 0.5 else gb for ga, gb in zip(to_gene(a, space), to_gene(b, space), strict=True)]
    return from_gene(tuple(gene), space)


def enumerate_configs(space: DesignSpace) -> Iterator[SubTransformerConfig]:
    """Every configuration of a (tiny) space; for checking the counting rule, never for real spaces."""
    def layers(choice_lists: list[tuple[int, ...]], depth: int) -> Iterator[tuple[tuple[int, ...], ...]]:
        per_layer = list(itertools.product(*choice_lists))
        for combo in itertools.product(per_layer, repeat=depth):
            yield tuple(zip(*combo, strict=True)) if combo else tuple(() for _ in choice_lists)

    enc_lists = [space.encoder_ffn_embed_dim_choice, space.encoder_self_attention_heads_choice]
    dec_lists = [space.decoder_ffn_embed_dim_choice, space.decoder_self_attention_heads_choice,
                 space.decoder_ende_attention_heads_choice, space.decoder_arbitrary_ende_attn_choice]
    for ee, de in itertools.product(space.encoder_embed_choice, space.decoder_embed_choice):
        for el in space.encoder_layer_num_choice:
            for enc in layers(enc_lists, el):
                for dl in space.decoder_layer_num_choice:
                    for dec in layers(dec_lists, dl):
                        yield SubTransformerConfig(ee, el, *enc, de, dl, *dec)
