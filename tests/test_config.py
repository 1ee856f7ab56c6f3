from __future__ import annotations

import random
from dataclasses import replace

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from dynhat.errors import ConfigError
from dynhat.space import (
    DesignSpace,
    SubTransformerConfig,
    crossover,
    from_gene,
    largest,
    load_space,
    mutate,
    sample,
    smallest,
    to_gene,
)
from dynhat.space.sampling import gene_choices

SPACES = [load_space("hat-wmt14-en-de"), load_space("multi30k-cpu"), load_space("multi30k-cpu-fixedhead")]
XEON = "HAT_wmt14ende_xeon@278.7ms_bleu@27.9.yml"


@pytest.mark.shared_data
def test_every_hat_subtransformer_round_trips(hat_configs, tmp_path) -> None:
    space0 = DesignSpace.from_yaml(hat_configs / "supertransformer" / "space0.yml")
    files = sorted((hat_configs / "subtransformer").glob("HAT_*.yml"))
    assert len(files) == 17
    for path in files:
        config = SubTransformerConfig.from_yaml(path).validate(space0)
        original = yaml.safe_load(path.read_text())
        original.pop("train-subtransformer", None)
        assert config.to_dict() == original
        config.save_yaml(tmp_path / path.name)
        assert yaml.safe_load((tmp_path / path.name).read_text()) == original
        assert SubTransformerConfig.from_yaml(tmp_path / path.name) == config


@pytest.mark.shared_data
def test_known_hat_config_and_stable_id(hat_configs) -> None:
    config = SubTransformerConfig.from_yaml(hat_configs / "subtransformer" / XEON)
    assert config.decoder_layer_num == 3
    assert config.encoder_self_attention_heads == (4, 4, 8, 8, 8, 4)
    assert config.decoder_arbitrary_ende_attn == (-1, 1, 1)
    assert config.id == "e512d512L3-5e80d022"  # ids are content hashes: they must not change between releases


def _hat_dict() -> dict:
    return largest(SPACES[0]).to_dict()


@pytest.mark.parametrize(
    ("change", "field", "text"),
    [
        ({"decoder-ffn-embed-dim-all-subtransformer": [3072] * 5 + [4096]},
         "decoder-ffn-embed-dim-all-subtransformer[5]", "4096 is not in the space's choices [3072, 2048, 1024]"),
        ({"decoder-layer-num-subtransformer": 4}, "decoder-ffn-embed-dim-all-subtransformer",
         "has 6 entries but decoder-layer-num-subtransformer is 4"),
        ({"encoder-self-attention-heads-all-subtransformer": [8, 8, 8, 8, 8, 3]},
         "encoder-self-attention-heads-all-subtransformer[5]", "3 heads do not divide qkv-dim 512"),
        ({"decoder-embed-dim": 512}, "decoder-embed-dim", "unknown key"),
        ({"encoder-embed-dim-subtransformer": 600}, "encoder-embed-dim-subtransformer", "[640, 512]"),
        ({"decoder-layer-num-subtransformer": "6"}, "decoder-layer-num-subtransformer", "expected an integer"),
    ],
)
def test_config_errors_name_field_and_allowed(change, field, text, tmp_path) -> None:
    path = tmp_path / "sub.yml"
    path.write_text(yaml.safe_dump(_hat_dict() | change))
    with pytest.raises(ConfigError) as err:
        SubTransformerConfig.from_yaml(path).validate(SPACES[0], source=str(path))
    message = str(err.value)
    assert field in message and text in message and "sub.yml" in message


def test_missing_file_is_clear(tmp_path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        SubTransformerConfig.from_yaml(tmp_path / "none.yml")


def test_extremes() -> None:
    space = SPACES[0]
    big, small = largest(space), smallest(space)
    assert big.decoder_layer_num == 6 and set(big.decoder_ffn_embed_dim) == {3072}
    assert set(big.decoder_arbitrary_ende_attn) == {2}
    assert small.decoder_layer_num == 1 and small.decoder_ffn_embed_dim == (1024,)
    assert small.encoder_embed_dim == 512 and small.decoder_arbitrary_ende_attn == (-1,)


def test_sampling_is_seeded() -> None:
    space = SPACES[1]
    a = [sample(space, random.Random(7)) for _ in range(3)]
    b = [sample(space, random.Random(7)) for _ in range(3)]
    assert a == b
    rng = random.Random(0)
    assert len({sample(space, rng) for _ in range(50)}) > 45


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31), which=st.sampled_from(range(len(SPACES))))
def test_evolution_operators_stay_in_space(seed: int, which: int) -> None:
    space, rng = SPACES[which], random.Random(seed)
    a, b = sample(space, rng).validate(space), sample(space, rng).validate(space)
    gene_a, gene_b = to_gene(a, space), to_gene(b, space)
    assert len(gene_a) == 2 + 2 * 6 + 2 + 4 * 6
    assert from_gene(gene_a, space) == a
    assert mutate(a, space, 0.0, rng) == a
    mutated = mutate(a, space, 1.0, rng).validate(space)
    assert all(g in c for g, c in zip(to_gene(mutated, space), gene_choices(space), strict=True))
    child = crossover(a, b, space, rng).validate(space)
    active = _active_positions(child)
    assert all(to_gene(child, space)[i] in (gene_a[i], gene_b[i]) for i in active)


def _active_positions(config: SubTransformerConfig) -> list[int]:
    """Gene positions that hold a value the configuration uses (6+6 layer SuperTransformer)."""
    enc, dec = config.encoder_layer_num, config.decoder_layer_num
    positions = [0, 1, *range(2, 2 + enc), *range(8, 8 + enc), 14, 15]
    for block in range(4):
        positions += range(16 + 6 * block, 16 + 6 * block + dec)
    return positions


def test_inert_genes_padded_with_first_layer() -> None:
    space = SPACES[0]
    config = replace(smallest(space), decoder_ffn_embed_dim=(2048,))
    gene = to_gene(config, space)
    dec_ffn = gene[2 + 12 + 2 : 2 + 12 + 2 + 6]
    assert dec_ffn == (2048,) * 6
