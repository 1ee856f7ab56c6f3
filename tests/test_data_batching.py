from __future__ import annotations

import logging

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dynhat.data.batching import TokenBatcher, collate

PROPERTY = settings(max_examples=40, deadline=None, derandomize=True)
PAIRS = st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30)), min_size=1, max_size=60)


def _corpus(lengths: list[tuple[int, int]]) -> tuple[list[list[int]], list[list[int]]]:
    """Distinct ids per sentence, so a collated row can be traced back to its pair."""
    src = [[4 + (k + i) % 50 for k in range(s)] for i, (s, _) in enumerate(lengths)]
    tgt = [[60 + (k * 3 + i) % 50 for k in range(t)] for i, (_, t) in enumerate(lengths)]
    return src, tgt


def _many_batches() -> TokenBatcher:
    src, tgt = _corpus([(i % 17 + 1, (i * 7) % 13 + 1) for i in range(300)])
    return TokenBatcher(src, tgt, max_tokens=64, seed=5)


@PROPERTY
@given(lengths=PAIRS, max_tokens=st.integers(2, 200), max_positions=st.integers(2, 40), seed=st.integers(0, 9),
       epoch=st.integers(0, 5))
def test_budget_and_each_pair_exactly_once(lengths: list[tuple[int, int]], max_tokens: int, max_positions: int,
                                           seed: int, epoch: int) -> None:
    src, tgt = _corpus(lengths)
    batcher = TokenBatcher(src, tgt, max_tokens, seed=seed, max_positions=max_positions)
    fits = [i for i, (s, t) in enumerate(lengths) if max(s, t) + 1 <= min(max_positions, max_tokens)]
    assert batcher.dropped == len(lengths) - len(fits)
    assert batcher.dropped_indices == sorted(set(range(len(lengths))) - set(fits))
    batches = batcher.epoch_batches(epoch)
    assert sorted(i for b in batches for i in b.indices) == fits
    for b in batches:
        assert b.src_tokens.numel() <= max_tokens and b.target.numel() <= max_tokens
        assert len(b) * (max(max(lengths[i]) for i in b.indices) + 1) <= max_tokens
        assert b.prev_output_tokens.shape == b.target.shape
        assert b.ntokens == int(b.target.ne(1).sum()) == sum(lengths[i][1] + 1 for i in b.indices)


@PROPERTY
@given(lengths=PAIRS, seed=st.integers(0, 1000), epoch=st.integers(0, 1000))
def test_same_seed_and_epoch_give_the_same_batches(lengths: list[tuple[int, int]], seed: int, epoch: int) -> None:
    src, tgt = _corpus(lengths)
    one = TokenBatcher(src, tgt, 48, seed=seed).epoch_batches(epoch)
    two = TokenBatcher(src, tgt, 48, seed=seed).epoch_batches(epoch)  # a fresh batcher, as after a restart
    assert [b.indices for b in one] == [b.indices for b in two]
    assert all(torch.equal(a.src_tokens, b.src_tokens) for a, b in zip(one, two, strict=True))


@PROPERTY
@given(seed=st.integers(0, 10**6), epoch=st.integers(0, 10**6), step=st.integers(1, 1000))
def test_different_epochs_give_different_orders(seed: int, epoch: int, step: int) -> None:
    batcher = _many_batches()
    batcher.seed = seed
    assert len(batcher) > 20  # 20! orders: equal orders by chance are out of reach
    first, second = batcher.epoch_order(epoch), batcher.epoch_order(epoch + step)
    assert first != second and sorted(first) == sorted(second) == list(range(len(batcher)))


@PROPERTY
@given(epoch=st.integers(0, 50), skip=st.integers(0, 40))
def test_skip_resumes_mid_epoch(epoch: int, skip: int) -> None:
    batcher = _many_batches()
    full = batcher.epoch_indices(epoch)
    assert batcher.epoch_indices(epoch, skip) == full[skip:]
    assert [b.indices for b in batcher.iter_epoch(epoch, skip)] == full[skip:]


def test_collate_layout() -> None:
    batch = collate([[10, 11, 12], [13]], [[20], [21, 22]], indices=[7, 3])
    assert batch.src_tokens.tolist() == [[10, 11, 12, 2], [13, 2, 1, 1]]
    assert batch.src_lengths.tolist() == [4, 2]
    assert batch.prev_output_tokens.tolist() == [[2, 20, 1], [2, 21, 22]]
    assert batch.target.tolist() == [[20, 2, 1], [21, 22, 2]]
    assert batch.ntokens == 5 and batch.indices == [7, 3] and len(batch) == 2
    assert batch.src_tokens.dtype == torch.long
    assert batch.to("cpu").target.tolist() == batch.target.tolist()


def test_batches_are_length_bucketed_and_unshuffled_on_request() -> None:
    src, tgt = _corpus([(i % 20 + 1, i % 20 + 1) for i in range(100)])
    batcher = TokenBatcher(src, tgt, 60, shuffle=False)
    longest = [max(len(src[i]) for i in b) for b in batcher.epoch_indices(0)]
    assert longest == sorted(longest) and batcher.epoch_indices(0) == batcher.epoch_indices(9)
    padding = sum(int(b.src_tokens.eq(1).sum()) for b in batcher.epoch_batches(0))
    assert padding <= len(src)  # sorted buckets: at most one pad per sentence here


def test_dropped_pairs_are_reported(caplog: pytest.LogCaptureFixture) -> None:
    src = [[5] * 10, [5] * 300, [5] * 3]
    tgt = [[6] * 10, [6] * 3, [6] * 256]
    with caplog.at_level(logging.WARNING, logger="dynhat.data.batching"):
        batcher = TokenBatcher(src, tgt, 4096)
    assert (batcher.dropped, batcher.dropped_indices) == (2, [1, 2])
    assert "dropped 2 of 3 sentence pairs (2 longer than max_positions=256" in caplog.text
    assert "2 dropped" in batcher.summary()


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="2 source but 1 target"):
        TokenBatcher([[1], [2]], [[3]], 100)
    with pytest.raises(ValueError, match="max_tokens"):
        TokenBatcher([[1]], [[3]], 1)
    with pytest.raises(ValueError, match="skip must be >= 0"):
        TokenBatcher([[5]], [[6]], 10).epoch_indices(0, -1)
