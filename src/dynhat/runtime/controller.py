"""Which operating point serves the next request: pluggable policies, and the default one.

Default (``HysteresisPolicy``): two time scales. The *conditions* (slowdown, threads, budget) change slowly and are
noisy, so they set a ceiling with hysteresis: the best point whose expected latency for a typical sentence fits the
budget with a safety margin; the ceiling drops at once, and rises only after ``up_after`` consecutive decisions in
which the better point would fit the larger ``up_margin``. Each *sentence* then gets the best point at or below the
ceiling that fits its own length with the margin, so a long sentence steps down for itself alone and the next
short one is served at the ceiling again (a switch is a weight look-up, well under a millisecond: following
sentence lengths costs nothing, following noise would). When nothing fits, the fastest point is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Candidate:
    index: int
    expected_ms: float  # for this request, under current conditions
    quality: float  # lower is better (the translator passes each point's rank by PointLibrary.quality)
    typical_ms: float | None = None  # for a sentence of typical length, under current conditions

    @property
    def conditions_ms(self) -> float:
        return self.expected_ms if self.typical_ms is None else self.typical_ms


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
        self.ceiling: int | None = None  # index of the best point the conditions allow
        self._streak = 0

    def choose(self, candidates: Sequence[Candidate], budget_ms: float, current: int | None) -> int:
        by_index = {c.index: c for c in candidates}
        ceiling = by_index[self._update_ceiling(candidates, budget_ms)]
        allowed = [c for c in candidates if c.quality >= ceiling.quality]
        return GreedyPolicy(self.margin).choose(allowed, budget_ms, current)

    def _update_ceiling(self, candidates: Sequence[Candidate], budget_ms: float) -> int:
        typical = [Candidate(c.index, c.conditions_ms, c.quality) for c in candidates]
        by_index = {c.index: c for c in typical}
        target = GreedyPolicy(self.margin).choose(typical, budget_ms, None)
        if self.ceiling is None or self.ceiling not in by_index:
            self._streak, self.ceiling = 0, target
            return target
        now, want = by_index[self.ceiling], by_index[target]
        if want.quality >= now.quality:  # staying, or down at once because the ceiling no longer fits
            self._streak, self.ceiling = 0, target
        elif want.expected_ms * (1 + self.up_margin) <= budget_ms:
            self._streak += 1
            if self._streak >= self.up_after:
                self._streak, self.ceiling = 0, target
        else:
            self._streak = 0
            if now.expected_ms * (1 + self.margin) > budget_ms:
                self.ceiling = target
        return self.ceiling


class FixedPolicy:
    """Always the same point: an operating point used as a static model."""

    def __init__(self, index: int) -> None:
        self.index = index

    def choose(self, candidates: Sequence[Candidate], budget_ms: float, current: int | None) -> int:
        return self.index
