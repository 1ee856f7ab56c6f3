"""The pipeline's settings: kept apart from ``steps`` so the CLI's help needs no torch."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PipelineSettings:
    run_dir: str = "runs/main"
    train_minutes: float = 11.0
    checkpoint: str | None = None  # a SuperTransformer trained already (e.g. the 2-hour run): no training step
    latency_configs: int = 80
    latency_runs: int = 20
    latency_retries: int = 1  # re-measurements of a disturbed row (the library default, 2, is for quiet collections)
    constraints: int = 5  # operating points, evenly spread between the fastest and the largest SubTransformer
    population: int = 40
    generations: int = 10
    valid_sentences: int = 100
    test_sentences: int = 200
    variant_beams: tuple[int, ...] = (1,)  # decoding variants of every point (greedy: the library's floor)
    scenario: str | None = None  # phases YAML (default: the shipped one)
    threads: int = 1
    cache_dir: str | None = None
