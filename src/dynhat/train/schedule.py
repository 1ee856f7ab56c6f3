"""Learning-rate schedules of fairseq's ``cosine`` and ``inverse_sqrt`` (linear warm-up from ``warmup_init_lr``)."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class LRSchedule:
    """lr(step) for step = number of updates done; a plain object so its state is part of every checkpoint."""

    kind: str  # "cosine" or "inverse_sqrt"
    max_lr: float
    warmup_updates: int
    max_updates: int
    warmup_init_lr: float = 1e-7
    min_lr: float = 1e-7

    def __post_init__(self) -> None:
        if self.kind not in ("cosine", "inverse_sqrt"):
            raise ValueError(f"lr-scheduler: {self.kind!r} is not one of ['cosine', 'inverse_sqrt']")

    def __call__(self, step: int) -> float:
        if step < self.warmup_updates:
            return self.warmup_init_lr + (self.max_lr - self.warmup_init_lr) * step / self.warmup_updates
        if self.kind == "inverse_sqrt":
            return self.max_lr * math.sqrt(max(self.warmup_updates, 1) / max(step, 1))
        period = max(self.max_updates - self.warmup_updates, 1)
        progress = min((step - self.warmup_updates) / period, 1.0)
        return self.min_lr + 0.5 * (self.max_lr - self.min_lr) * (1 + math.cos(math.pi * progress))
