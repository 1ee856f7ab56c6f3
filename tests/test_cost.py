from __future__ import annotations

import random
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from dynhat.model import ModelSettings, SuperTransformer, extract
from dynhat.space import DesignSpace, SubTransformerConfig, load_space, sample
from dynhat.space.cost import count_macs, count_params

SPACES = {name: load_space(name) for name in ("hat-wmt14-en-de", "multi30k-cpu", "multi30k-cpu-fixedhead")}
VOCAB = 96
MODELS = {name: SuperTransformer(space, ModelSettings(vocab_size=VOCAB)).eval() for name, space in SPACES.items()}

# HAT's README parameter counts (millions, embedding excluded) for the published WMT'14 En-De SubTransformers.
HAT_README_PARAMS = {
    "raspberrypi@3.5s": 25.22, "raspberrypi@4.0s": 29.42, "raspberrypi@4.5s": 35.72, "raspberrypi@5.0s": 36.77,
    "raspberrypi@6.0s": 44.13, "raspberrypi@6.9s": 48.33, "xeon@137.9ms": 30.47, "xeon@204.2ms": 35.72,
    "xeon@278.7ms": 40.97, "xeon@340.2ms": 46.23, "xeon@369.6ms": 51.48, "xeon@450.9ms": 56.73,
    "titanxp@57.1ms": 30.47, "titanxp@91.2ms": 35.72, "titanxp@126.0ms": 40.97, "titanxp@146.7ms": 51.20,
    "titanxp@208.1ms": 49.38,
}  # fmt: skip


@pytest.mark.shared_data
def test_param_counts_match_hat_readme(hat_configs) -> None:
    space0 = DesignSpace.from_yaml(hat_configs / "supertransformer" / "space0.yml")
    for path in (hat_configs / "subtransformer").glob("HAT_*.yml"):
        key = re.match(r"HAT_wmt14ende_(.+)_bleu", path.name).group(1)  # type: ignore[union-attr]
        config = SubTransformerConfig.from_yaml(path)
        count = count_params(config, space0, 32768)
        assert round(count.non_embedding / 1e6, 2) == HAT_README_PARAMS[key], path.name
        assert count.embedding == 32768 * max(config.encoder_embed_dim, config.decoder_embed_dim)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), name=st.sampled_from(sorted(SPACES)))
def test_param_count_equals_extracted_model(seed: int, name: str) -> None:
    space, model = SPACES[name], MODELS[name]
    config = sample(space, random.Random(seed))
    assert count_params(config, space, VOCAB).total == extract(model, config).num_parameters()


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31), name=st.sampled_from(["multi30k-cpu", "multi30k-cpu-fixedhead"]),
       src_len=st.integers(1, 12), tgt_len=st.integers(1, 6))
def test_macs_equal_torch_flop_counter(seed: int, name: str, src_len: int, tgt_len: int) -> None:
    """PyTorch's FLOP counter (attention in the math backend so it is counted) sees exactly our MACs x 2."""
    space, model = SPACES[name], MODELS[name]
    config = sample(space, random.Random(seed))
    src = torch.randint(4, VOCAB, (1, src_len))
    with torch.inference_mode(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        state = model.init_state(model.encode(src, config), config)
        token = torch.full((1,), 2)
        for _ in range(tgt_len):
            token = model.decode_step(token, state, config).argmax(-1)
    assert counter.get_total_flops() == 2 * count_macs(config, space, VOCAB, src_len, tgt_len)


def test_fixed_head_dim_makes_fewer_heads_cheaper() -> None:
    hat, fixed = SPACES["multi30k-cpu"], SPACES["multi30k-cpu-fixedhead"]
    config = sample(hat, random.Random(1))
    two = SubTransformerConfig.from_dict(config.to_dict() | {
        "encoder-self-attention-heads-all-subtransformer": [2] * 6})
    four = SubTransformerConfig.from_dict(config.to_dict() | {
        "encoder-self-attention-heads-all-subtransformer": [4] * 6})
    assert count_params(two, hat, VOCAB) == count_params(four, hat, VOCAB)
    assert count_macs(two, hat, VOCAB) == count_macs(four, hat, VOCAB)
    assert count_params(two, fixed, VOCAB).total < count_params(four, fixed, VOCAB).total
    assert count_macs(two, fixed, VOCAB) < count_macs(four, fixed, VOCAB)
