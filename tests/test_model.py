from __future__ import annotations

import random
import threading
from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dynhat.model import DenseTransformer, ModelSettings, SuperTransformer, extract
from dynhat.space import largest, load_space, sample, smallest

VOCAB = 120
SPACES = {name: load_space(name) for name in ("hat-wmt14-en-de", "multi30k-cpu", "multi30k-cpu-fixedhead")}
SPACES["multi30k-tiny-prenorm"] = replace(load_space("multi30k-tiny"), normalize_before=True, name="tiny-prenorm")
torch.manual_seed(0)
MODELS = {name: SuperTransformer(space, ModelSettings(vocab_size=VOCAB)).eval() for name, space in SPACES.items()}
with torch.no_grad():  # norms away from (1, 0), so a norm applied in the wrong place shows
    for module in MODELS["multi30k-tiny-prenorm"].modules():
        if isinstance(module, torch.nn.LayerNorm):
            module.weight.uniform_(0.5, 1.5)
            module.bias.uniform_(-0.5, 0.5)
ATOL = 1e-5
RTOL = 1e-5  # float32 reassociation error grows with the value (log-probabilities reach ~ -15)


def _batch(seed: int, batch: int = 3, src_len: int = 9, tgt_len: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    src = torch.randint(4, VOCAB, (batch, src_len), generator=gen)
    src[0, src_len - 3 :] = 1  # right padding on one sentence
    prev = torch.randint(4, VOCAB, (batch, tgt_len), generator=gen)
    prev[:, 0] = 2
    return src, prev


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31), name=st.sampled_from(sorted(SPACES)))
def test_inherited_matches_extracted(seed: int, name: str) -> None:
    model = MODELS[name]
    config = sample(SPACES[name], random.Random(seed))
    src, prev = _batch(seed)
    dense = extract(model, config).eval()
    with torch.inference_mode():
        expected = model(src, prev, config=config)
        torch.testing.assert_close(dense(src, prev), expected, atol=ATOL, rtol=RTOL)
        state, dense_state = model.init_state(model.encode(src, config), config), dense.init_state(dense.encode(src))
        for t in range(prev.shape[1]):
            torch.testing.assert_close(dense.decode_step(prev[:, t], dense_state),
                                       model.decode_step(prev[:, t], state, config), atol=ATOL, rtol=RTOL)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31), name=st.sampled_from(sorted(SPACES)))
def test_incremental_equals_full_recomputation(seed: int, name: str) -> None:
    model = MODELS[name]
    config = sample(SPACES[name], random.Random(seed))
    src, prev = _batch(seed)
    with torch.inference_mode():
        full = model(src, prev, config=config)
        state = model.init_state(model.encode(src, config), config)
        steps = torch.stack([model.decode_step(prev[:, t], state, config) for t in range(prev.shape[1])], dim=1)
    torch.testing.assert_close(steps, full, atol=ATOL, rtol=RTOL)


def test_padding_does_not_change_a_sentence() -> None:
    model, config = MODELS["multi30k-cpu"], sample(SPACES["multi30k-cpu"], random.Random(3))
    src, prev = _batch(5)
    with torch.inference_mode():
        batched = model(src, prev, config=config)[0]
        alone = model(src[:1, :6], prev[:1], config=config)[0]
    torch.testing.assert_close(batched, alone, atol=ATOL, rtol=RTOL)


def test_set_config_uses_views_of_shared_weights() -> None:
    model = MODELS["hat-wmt14-en-de"]
    space = SPACES["hat-wmt14-en-de"]
    for config in (smallest(space), largest(space)):
        model.set_config(config)
        w = model.weights()
        fc1 = model.encoder.layers[0].fc1.weight
        assert w.encoder[0].ffn.fc1_w.untyped_storage().data_ptr() == fc1.untyped_storage().data_ptr()
        assert w.encoder[0].ffn.fc1_w.shape == (config.encoder_ffn_embed_dim[0], config.encoder_embed_dim)
        assert w.decoder_embed.data_ptr() == model.encoder.embed_tokens.weight.data_ptr()
    assert model.active_config == largest(space)


def test_hat_state_dict_layout() -> None:
    state = MODELS["hat-wmt14-en-de"].state_dict()
    assert state["encoder.layers.0.self_attn.in_proj_weight"].shape == (1536, 640)
    assert state["decoder.layers.5.encoder_attn.out_proj.weight"].shape == (640, 512)
    assert state["encoder.layers.3.fc1.weight"].shape == (3072, 640)
    assert state["encoder.embed_tokens.weight"].data_ptr() == state["decoder.embed_tokens.weight"].data_ptr()


def test_gradients_reach_only_the_active_slice() -> None:
    space = SPACES["multi30k-cpu"]
    model = SuperTransformer(space, ModelSettings(vocab_size=VOCAB, dropout=0.0, attention_dropout=0.0))
    config = smallest(space)
    src, prev = _batch(1)
    for _ in range(2):  # the cached views must carry gradients on every step, not only the first
        model.zero_grad()
        model(src, prev, config=config).sum().backward()
        fc1 = model.encoder.layers[0].fc1.weight.grad
        f, d = config.encoder_ffn_embed_dim[0], config.encoder_embed_dim
        assert fc1[:f, :d].abs().sum() > 0
        assert fc1[f:].abs().sum() == 0 and fc1[:, d:].abs().sum() == 0
        assert model.decoder.layers[1].fc1.weight.grad is None  # decoder layer 2 is not active


def test_concurrent_calls_with_different_configs() -> None:
    model = MODELS["multi30k-cpu"]
    space = SPACES["multi30k-cpu"]
    configs = [sample(space, random.Random(i)) for i in range(4)]
    src, prev = _batch(11)
    with torch.inference_mode():
        expected = [model(src, prev, config=c) for c in configs]
    errors: list[str] = []

    def run(i: int) -> None:
        with torch.inference_mode():
            for _ in range(5):
                model.set_config(configs[(i + 1) % 4])  # another thread's switch must not leak into this call
                if not torch.allclose(model(src, prev, config=configs[i]), expected[i], atol=ATOL):
                    errors.append(configs[i].id)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_greedy_and_dense_save_load(tmp_path) -> None:
    model, config = MODELS["multi30k-cpu-fixedhead"], sample(SPACES["multi30k-cpu-fixedhead"], random.Random(2))
    src, _ = _batch(3)
    dense = extract(model, config).eval()
    dense.save(tmp_path / "dense.pt")
    loaded = DenseTransformer.load(tmp_path / "dense.pt").eval()
    out = model.greedy(src, max_len=12, config=config)
    assert torch.equal(dense.greedy(src, max_len=12), out)
    assert torch.equal(loaded.greedy(src, max_len=12), out)
    assert loaded.config == config and out.shape[0] == 3


def test_errors() -> None:
    model = SuperTransformer(SPACES["multi30k-cpu"], ModelSettings(vocab_size=VOCAB))
    with pytest.raises(RuntimeError, match="set_config"):
        model.weights()
    wrong = largest(SPACES["hat-wmt14-en-de"])
    with pytest.raises(ValueError, match="not in the space's choices"):
        model.set_config(wrong)
    dense = extract(MODELS["multi30k-cpu"], smallest(SPACES["multi30k-cpu"]))
    with pytest.raises(ValueError, match="cannot run"):
        dense.weights(largest(SPACES["multi30k-cpu"]))


def test_move_keeps_active_config() -> None:
    model = SuperTransformer(SPACES["multi30k-cpu"], ModelSettings(vocab_size=VOCAB)).eval()
    config = smallest(SPACES["multi30k-cpu"])
    model.set_config(config)
    model.double()
    assert model.active_config == config
    assert model.weights().encoder_embed.dtype == torch.float64


def test_pre_norm_has_a_final_norm_per_stack_that_every_depth_uses() -> None:
    post, pre = MODELS["multi30k-cpu"], MODELS["multi30k-tiny-prenorm"]
    assert not any("layer_norm." in k and k.count(".") == 2 for k in post.state_dict())  # HAT's keys only
    assert {"encoder.layer_norm.weight", "decoder.layer_norm.bias"} <= set(pre.state_dict())
    src, prev = _batch(7)
    space = SPACES["multi30k-tiny-prenorm"]
    for config in (smallest(space), largest(space)):
        with torch.inference_mode():
            before = pre(src, prev, config=config)
            pre.decoder.layer_norm.bias.add_(0.25)
            after = pre(src, prev, config=config)
            pre.decoder.layer_norm.bias.sub_(0.25)
        assert not torch.allclose(before, after)
    assert load_space("multi30k-tiny").normalize_before is False
    assert replace(space, name="x").to_dict()["normalize-before"] is True
