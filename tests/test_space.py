from __future__ import annotations

from dataclasses import replace

import pytest
import yaml

from dynhat.errors import ConfigError
from dynhat.space import SHIPPED_SPACES, DesignSpace, load_space
from dynhat.space.sampling import enumerate_configs

TINY = {
    "encoder-embed-dim": 16, "decoder-embed-dim": 16, "encoder-ffn-embed-dim": 32, "decoder-ffn-embed-dim": 32,
    "encoder-layers": 3, "decoder-layers": 2, "encoder-attention-heads": 2, "decoder-attention-heads": 2,
    "qkv-dim": 8,
    "encoder-embed-choice": [16, 8], "decoder-embed-choice": [16], "encoder-ffn-embed-dim-choice": [32, 16],
    "decoder-ffn-embed-dim-choice": [32], "encoder-layer-num-choice": [3, 2], "decoder-layer-num-choice": [2, 1],
    "encoder-self-attention-heads-choice": [2, 1], "decoder-self-attention-heads-choice": [2],
    "decoder-ende-attention-heads-choice": [2, 1], "decoder-arbitrary-ende-attn-choice": [-1, 1],
}  # fmt: skip


def test_shipped_spaces_load() -> None:
    for name in SHIPPED_SPACES:
        space = load_space(name)
        assert space.name == name
        assert space.num_configurations() > 10**13  # 4 encoder layers (multi30k-tiny): 1.2e13; 6: 4.2e14


@pytest.mark.shared_data
def test_hat_space0_matches_shipped(hat_configs) -> None:
    space0 = DesignSpace.from_yaml(hat_configs / "supertransformer" / "space0.yml")
    shipped = load_space("hat-wmt14-en-de")
    assert replace(space0, name=shipped.name, description=shipped.description) == shipped
    assert space0.settings["max-update"] == 40000


def test_space0_exact_count() -> None:
    space = load_space("hat-wmt14-en-de")
    enc = (3 * 2) ** 6
    dec = sum((3 * 2 * 2 * 3) ** n for n in range(1, 7))
    assert space.num_configurations() == 2 * 2 * enc * dec == 417_846_678_672_384


@pytest.mark.parametrize("overrides", [{}, {"encoder-layer-num-choice": [3]}, {"decoder-layer-num-choice": [1]},
                                       {"decoder-arbitrary-ende-attn-choice": [-1]}])
def test_count_matches_brute_force(overrides) -> None:
    space = DesignSpace.from_dict(TINY | overrides)
    configs = list(enumerate_configs(space))
    assert len(configs) == space.num_configurations()
    assert len({c.id for c in configs}) == len(configs)
    for c in configs:
        c.validate(space)


def test_yaml_round_trip(tmp_path) -> None:
    space = load_space("multi30k-cpu-fixedhead")
    space.save_yaml(tmp_path / "s.yml")
    again = DesignSpace.from_yaml(tmp_path / "s.yml")
    assert again == space and again.head_dim == 64


@pytest.mark.parametrize(
    ("change", "field", "text"),
    [
        ({"encoder-embed-choice": [16, 24]}, "encoder-embed-choice", "outside 1..16"),
        ({"decoder-self-attention-heads-choice": [2, 3], "decoder-attention-heads": 3}, "decoder-self-attention",
         "do not divide qkv-dim 8"),
        ({"decoder-arbitrary-ende-attn-choice": [-1, 5]}, "decoder-arbitrary-ende-attn-choice", "not in [-1, 1, 2]"),
        ({"bogus-key": 1}, "bogus-key", "unknown key"),
        ({"qkv-dim": "512"}, "qkv-dim", "expected an integer"),
        ({"encoder-ffn-embed-dim-choice": []}, "encoder-ffn-embed-dim-choice", "at least one"),
    ],
)
def test_space_errors_name_the_field(change, field, text, tmp_path) -> None:
    path = tmp_path / "bad.yml"
    path.write_text(yaml.safe_dump(TINY | change))
    with pytest.raises(ConfigError) as err:
        DesignSpace.from_yaml(path)
    assert field in str(err.value) and text in str(err.value) and "bad.yml" in str(err.value)


def test_missing_keys_and_unknown_space() -> None:
    data = dict(TINY)
    del data["qkv-dim"]
    with pytest.raises(ConfigError, match=r"missing required keys.*qkv-dim"):
        DesignSpace.from_dict(data)
    with pytest.raises(ConfigError, match="not a shipped space name"):
        load_space("no-such-space")


def test_head_dim_space_rejects_too_many_heads() -> None:
    with pytest.raises(ConfigError, match="exceed qkv-dim"):
        DesignSpace.from_dict(TINY | {"head-dim": 8})
