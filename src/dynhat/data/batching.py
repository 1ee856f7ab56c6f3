"""Token-based batching: length-bucketed batches under a padded-token budget, in a reproducible order per epoch.

Why token budgets: with sentences of 3 to 60 pieces, a fixed number of sentences per batch wastes most of the
compute on padding or overflows memory on the long ones; a budget of ``max_tokens`` padded positions keeps every
step about the same cost. Sorting by length before cutting batches keeps padding small.

Why ``(seed, epoch)``: the batch order of an epoch is a pure function of both, so a run resumed mid-epoch (with
``skip``) sees exactly the batches it would have seen without the interruption, and every data-parallel rank
builds the same order without communicating.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from dynhat.data.vocab import EOS, PAD

log = logging.getLogger(__name__)


@dataclass
class Batch:
    """Padded tensors in fairseq's layout, so the model code (and HAT's) reads them unchanged."""

    src_tokens: Tensor  # [B, S] source + eos, right-padded with pad
    src_lengths: Tensor  # [B] non-pad source positions (eos included)
    prev_output_tokens: Tensor  # [B, T] eos + target: the decoder input under teacher forcing
    target: Tensor  # [B, T] target + eos
    ntokens: int  # non-pad target positions: the normaliser of the loss
    indices: list[int]  # positions of the pairs in the corpus the batcher was built from

    def __len__(self) -> int:
        return len(self.indices)

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.src_tokens.to(device), self.src_lengths.to(device), self.prev_output_tokens.to(device),
                     self.target.to(device), self.ntokens, self.indices)


def pad_rows(rows: Sequence[Sequence[int]], pad: int = PAD) -> Tensor:
    """Right-pad ``rows`` into one [len(rows), longest] long tensor."""
    out = torch.full((len(rows), max((len(r) for r in rows), default=0)), pad, dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            out[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
    return out


def collate(src: Sequence[Sequence[int]], tgt: Sequence[Sequence[int]], indices: Sequence[int] | None = None,
            pad: int = PAD, eos: int = EOS) -> Batch:
    """One batch from token ids without eos: eos is appended here (and moved to the front of the decoder input)."""
    if len(src) != len(tgt) or not src:
        raise ValueError(f"collate needs the same non-zero number of sources and targets, got {len(src)} and "
                         f"{len(tgt)}")
    sources = [[*s, eos] for s in src]
    targets = [[*t, eos] for t in tgt]
    return Batch(
        src_tokens=pad_rows(sources, pad),
        src_lengths=torch.tensor([len(s) for s in sources], dtype=torch.long),
        prev_output_tokens=pad_rows([[eos, *t] for t in tgt], pad),
        target=pad_rows(targets, pad),
        ntokens=sum(len(t) for t in targets),
        indices=list(indices) if indices is not None else list(range(len(src))),
    )


def batch_cost(longest: int, size: int) -> int:
    """Padded positions of the larger side of ``size`` pairs whose longest sentence has ``longest`` ids (no eos)."""
    return (longest + 1) * size


class TokenBatcher:
    """Pairs sorted by length and cut into batches of at most ``max_tokens`` padded tokens; order shuffled per epoch.

    The batches themselves are fixed once built (which keeps epochs comparable); only their order changes.
    Pairs longer than ``max_positions`` (eos included) on either side, or alone over ``max_tokens``, are dropped:
    their number is in ``dropped`` (positions in ``dropped_indices``) and logged as a warning.
    """

    def __init__(self, src: Sequence[Sequence[int]], tgt: Sequence[Sequence[int]], max_tokens: int, seed: int = 1,
                 max_positions: int = 256, shuffle: bool = True, pad: int = PAD, eos: int = EOS) -> None:
        if len(src) != len(tgt):
            raise ValueError(f"{len(src)} source but {len(tgt)} target sentences")
        if max_tokens < 2 or max_positions < 2:
            raise ValueError(f"max_tokens ({max_tokens}) and max_positions ({max_positions}) must be at least 2 "
                             "(one token and its eos)")
        self.max_tokens, self.max_positions = max_tokens, max_positions
        self.seed, self.shuffle, self.pad, self.eos = seed, shuffle, pad, eos
        self._src, self._tgt = src, tgt
        keep: list[int] = []
        too_long: list[int] = []
        over_budget: list[int] = []
        for i in range(len(src)):
            longest = max(len(src[i]), len(tgt[i])) + 1
            if longest > max_positions:
                too_long.append(i)
            elif longest > max_tokens:
                over_budget.append(i)
            else:
                keep.append(i)
        self.dropped_indices = sorted(too_long + over_budget)
        self.dropped = len(self.dropped_indices)
        if self.dropped:
            log.warning("batching: dropped %d of %d sentence pairs (%d longer than max_positions=%d tokens with eos, "
                        "%d alone over max_tokens=%d)", self.dropped, len(src), len(too_long), max_positions,
                        len(over_budget), max_tokens)
        self.batches = self._cut(keep)

    def _cut(self, keep: list[int]) -> list[list[int]]:
        """Greedy cut of the length-sorted pairs: each batch grows while its padded cost stays within budget."""
        order = sorted(keep, key=lambda i: (max(len(self._src[i]), len(self._tgt[i])), len(self._src[i]),
                                            len(self._tgt[i]), i))
        batches: list[list[int]] = []
        current: list[int] = []
        longest = 0
        for i in order:
            length = max(len(self._src[i]), len(self._tgt[i]))
            if current and batch_cost(max(longest, length), len(current) + 1) > self.max_tokens:
                batches.append(current)
                current, longest = [], 0
            current.append(i)
            longest = max(longest, length)
        if current:
            batches.append(current)
        return batches

    def __len__(self) -> int:
        return len(self.batches)

    @property
    def num_pairs(self) -> int:
        return sum(len(b) for b in self.batches)

    def summary(self) -> str:
        return (f"{self.num_pairs} pairs in {len(self)} batches of at most {self.max_tokens} tokens; "
                f"{self.dropped} dropped (longer than {self.max_positions} positions or over the budget)")

    def epoch_order(self, epoch: int) -> list[int]:
        """Batch numbers in the order epoch ``epoch`` visits them; a function of ``(seed, epoch)`` only."""
        order = list(range(len(self.batches)))
        if self.shuffle:
            random.Random(f"dynhat-batches:{self.seed}:{epoch}").shuffle(order)
        return order

    def epoch_indices(self, epoch: int, skip: int = 0) -> list[list[int]]:
        """Corpus positions of each batch of ``epoch``, from batch ``skip`` on (to resume mid-epoch)."""
        if skip < 0:
            raise ValueError(f"skip must be >= 0, got {skip}")
        return [self.batches[j] for j in self.epoch_order(epoch)[skip:]]

    def iter_epoch(self, epoch: int, skip: int = 0) -> Iterator[Batch]:
        """Collated batches of ``epoch``, built lazily (one batch's tensors in memory at a time)."""
        for indices in self.epoch_indices(epoch, skip):
            yield self._collate(indices)

    def epoch_batches(self, epoch: int, skip: int = 0) -> list[Batch]:
        """All collated batches of ``epoch`` after the first ``skip``."""
        return list(self.iter_epoch(epoch, skip))

    def epoch(self, epoch: int) -> list[Batch]:
        """Same as ``epoch_batches(epoch)`` (the name the trainer and evaluator use)."""
        return self.epoch_batches(epoch)

    def _collate(self, indices: list[int]) -> Batch:
        return collate([self._src[i] for i in indices], [self._tgt[i] for i in indices], indices, self.pad, self.eos)
