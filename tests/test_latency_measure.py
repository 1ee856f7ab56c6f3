from __future__ import annotations

import pytest
import torch
from helpers.toy_train import TOY_SPACE

from dynhat.inference.measure import measure_latency, pinned, trimmed_mean_std
from dynhat.model import ModelSettings, SuperTransformer, extract
from dynhat.space import DesignSpace, smallest


def test_trimming_drops_fastest_and_slowest_tenth() -> None:
    samples = [100.0] + [float(i) for i in range(1, 19)] + [-50.0]  # 20 samples: one outlier each side
    mean, _ = trimmed_mean_std(samples)
    assert mean == pytest.approx(sum(range(2, 18)) / 16)  # 10% of 20 = 2 dropped on each side
    assert trimmed_mean_std([5.0, 5.0, 5.0]) == (5.0, 0.0)


class CountingModel(SuperTransformer):
    steps = 0
    batch = 0

    def decode_step(self, tokens, state, config=None):  # type: ignore[no-untyped-def]
        CountingModel.steps += 1
        CountingModel.batch = tokens.shape[0]
        return super().decode_step(tokens, state, config)


def test_protocol_runs_exactly_the_requested_steps() -> None:
    space = DesignSpace.from_dict(TOY_SPACE)
    model = CountingModel(space, ModelSettings(vocab_size=30))
    before = torch.get_num_threads()
    result = measure_latency(model, smallest(space), src_len=7, tgt_len=9, beam=4, runs=5, warmup=2, threads=1)
    assert CountingModel.steps == (5 + 2) * 9 and CountingModel.batch == 4
    assert torch.get_num_threads() == before and model.training
    assert result.total_ms == result.encoder_ms + result.decoder_ms > 0
    assert result.threads == 1 and result.beam == 4 and result.machine["torch"] == torch.__version__


def test_dense_model_measures_too() -> None:
    space = DesignSpace.from_dict(TOY_SPACE)
    dense = extract(SuperTransformer(space, ModelSettings(vocab_size=30)), smallest(space))
    assert measure_latency(dense, src_len=5, tgt_len=5, beam=1, runs=3, warmup=1).runs == 3


def test_pinned_restores_threads() -> None:
    before = torch.get_num_threads()
    with pinned(None, 1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
