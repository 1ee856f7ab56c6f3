"""Token-based batching: length-bucketed batches of at most ``max_tokens`` padded tokens, shuffled per epoch.

The order of epoch ``e`` depends only on ``(seed, e)``, so a resumed run sees the same batches.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

PAD, EOS = 1, 2


@dataclass
class Batch:
    src_tokens: Tensor  # [B, S]: source + eos, right-padded
    prev_output_tokens: Tensor  # [B, T]: eos + target (teacher forcing input)
    target: Tensor  # [B, T]: target + eos
    ntokens: int  # non-pad target tokens
    indices: list[int]  # positions of these pairs in the corpus


def pad_rows(rows: list[list[int]]) -> Tensor:
    out = torch.full((len(rows), max(len(r) for r in rows)), PAD, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out


def collate(src: Sequence[list[int]], tgt: Sequence[list[int]], indices: list[int]) -> Batch:
    target = [[*t, EOS] for t in tgt]
    return Batch(pad_rows([[*s, EOS] for s in src]), pad_rows([[EOS, *t] for t in tgt]), pad_rows(target),
                 sum(len(t) for t in target), indices)


class TokenBatcher:
    """Bucket pairs by length, cut buckets into batches under ``max_tokens``, shuffle batch order per epoch."""

    def __init__(self, src: Sequence[list[int]], tgt: Sequence[list[int]], max_tokens: int, seed: int = 1,
                 max_positions: int = 256, shuffle: bool = True) -> None:
        keep = [i for i in range(len(src)) if len(src[i]) + 1 <= max_positions and len(tgt[i]) + 1 <= max_positions]
        self.dropped = len(src) - len(keep)
        self.seed, self.shuffle = seed, shuffle
        order = sorted(keep, key=lambda i: (len(tgt[i]), len(src[i]), i))
        self.batches: list[list[int]] = []
        current: list[int] = []
        longest = 0
        for i in order:
            size = max(len(src[i]), len(tgt[i])) + 1
            if current and max(longest, size) * (len(current) + 1) > max_tokens:
                self.batches.append(current)
                current, longest = [], 0
            current.append(i)
            longest = max(longest, size)
        if current:
            self.batches.append(current)
        self._src, self._tgt = src, tgt

    def __len__(self) -> int:
        return len(self.batches)

    def epoch(self, epoch: int) -> list[Batch]:
        order = list(range(len(self.batches)))
        if self.shuffle:
            random.Random(self.seed * 7919 + epoch).shuffle(order)
        return [self._collate(self.batches[j]) for j in order]

    def _collate(self, indices: list[int]) -> Batch:
        return collate([self._src[i] for i in indices], [self._tgt[i] for i in indices], indices)
