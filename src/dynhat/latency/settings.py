"""What a latency collection measures and how: kept apart from ``collect`` so the CLI's help needs no torch."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from dynhat.errors import ConfigError


@dataclass(frozen=True)
class CollectSettings:
    """What a collection measures and how; everything but ``configs`` must match to append to a CSV."""

    space: str = "multi30k-cpu"
    configs: int = 150  # about 4 minutes of this 2-core machine at one thread; HAT used 2,000
    seed: int = 0  # which configurations
    order_seed: int | None = None  # reshuffle the measurement order (default: sampling order)
    runs: int = 20  # HAT's latiter for its datasets; the 300 of the paper is for single models
    warmup: int = 5
    threads: int = 1
    src_len: int = 30
    tgt_len: int = 30
    beam: int = 4
    probe_every: int = 10
    reference: str = "middle"  # largest, smallest, middle or a SubTransformer YAML
    vocab_size: int = 8000
    max_spread: float = 0.05  # kept runs varying more than this (std / mean) were disturbed: measure again
    retries: int = 2  # re-measurements of a disturbed row; the fastest measurement is kept
    paired: bool = False  # every run right after one of the reference: a per-row drift correction (noisy VMs)

    def __post_init__(self) -> None:
        for name in ("configs", "runs", "threads", "src_len", "tgt_len", "beam", "probe_every", "vocab_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"must be at least 1, got {getattr(self, name)}", field=name)
        for name in ("warmup", "retries"):
            if getattr(self, name) < 0:
                raise ConfigError(f"must be at least 0, got {getattr(self, name)}", field=name)
        if self.max_spread <= 0:
            raise ConfigError(f"must be positive, got {self.max_spread}", field="max_spread")

    def protocol(self) -> dict[str, Any]:
        """The settings rows must share to be comparable (all but how many configurations and which)."""
        skip = {"configs", "seed", "order_seed"}
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}
