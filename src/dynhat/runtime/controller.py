"""Which operating point serves the next request: pluggable policies, and the default one.

Default (``HysteresisPolicy``): among the points whose expected latency (calibrated cost for this sentence's length
x current slowdown) fits the budget with a safety margin, take the best quality (lowest validation loss). Stepping
down to a faster point happens at once; stepping up needs ``up_after`` consecutive decisions that would fit the
larger ``up_margin``, so a noisy reading cannot make it oscillate. When nothing fits, the fastest point is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Candidate:
    index: int
    expected_ms: float  # for this request, under current conditions
    quality: float  # lower is better (validation loss)


class Policy(Protocol):
    def choose(self, candidates: Sequence[Candidate], budget_ms: float, current: int | None) -> int: ...


def fastest(candidates: Sequence[Candidate]) -> int:
    return min(candidates, key=lambda c: (c.expected_ms, c.quality)).index


class GreedyPolicy:
    """The best point that fits with ``margin``, no hysteresis: the reference the default is compared with."""

    def __init__(self, margin: float = 0.15) -> None:
        self.margin = margin

    def choose(self, candidates: Sequence[Candidate], budget_ms: float, current: int | None) -> int:
        fits = [c for c in candidates if c.expected_ms * (1 + self.margin) <= budget_ms]
        return min(fits, key=lambda c: c.quality).index if fits else fastest(candidates)


class HysteresisPolicy:
    def __init__(self, margin: float = 0.15, up_margin: float = 0.3, up_after: int = 3) -> None:
        if margin < 0 or up_margin < margin or up_after < 1:
            raise ValueError("need 0 <= margin <= up_margin and up_after >= 1")
        self.margin, self.up_margin, self.up_after = margin, up_margin, up_after
        self._streak = 0

    def choose(self, candidates: Sequence[Candidate], budget_ms: float, current: int | None) -> int:
        by_index = {c.index: c for c in candidates}
        target = GreedyPolicy(self.margin).choose(candidates, budget_ms, current)
        if current is None or current not in by_index:
            self._streak = 0
            return target
        now, want = by_index[current], by_index[target]
        if want.quality >= now.quality:  # staying, or a step down because the current point no longer fits
            self._streak = 0
            return target
        if want.expected_ms * (1 + self.up_margin) <= budget_ms:
            self._streak += 1
            if self._streak >= self.up_after:
                self._streak = 0
                return target
        else:
            self._streak = 0
        return current if now.expected_ms * (1 + self.margin) <= budget_ms else target
