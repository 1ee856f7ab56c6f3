"""The pipeline's settings: kept apart from ``steps`` so the CLI's help needs no torch."""

from __future__ import annotations

from dataclasses import dataclass

from dynhat.errors import ConfigError

#: The shipped SuperTransformer the main job serves by default (``dynhat.inference.release.DEFAULT_RELEASE``).
DEFAULT_RELEASE = "multi30k-en-de"
PAIRED_CHOICES = ("auto", "on", "off")


@dataclass(frozen=True)
class PipelineSettings:
    run_dir: str = "runs/main"
    # the SuperTransformer: ``checkpoint`` (a file, release folder or shipped name) if given; else with ``train``
    # one trained from scratch in the run directory for ``train_minutes``; else the shipped ``release`` (training
    # from scratch where none is shipped)
    checkpoint: str | None = None
    train: bool = False
    train_minutes: float = 11.0
    release: str = DEFAULT_RELEASE
    latency_configs: int = 50
    latency_runs: int = 10
    latency_retries: int = 1  # re-measurements of a disturbed row (the library default, 2, is for quiet collections)
    paired: str = "auto"  # auto: paired when the noise check finds the machine's speed moving (latency.noise)
    constraints: int = 5  # operating points, evenly spread between the fastest and the largest SubTransformer
    population: int = 32
    generations: int = 8
    valid_sentences: int = 100
    bleu_sentences: int | None = None  # of val, every point's BLEU (what ranks the served points); None: all
    variant_beams: tuple[int, ...] = (1,)  # decoding variants of every point (greedy: the library's floor)
    scenario: str | None = None  # phases YAML (default: the shipped one)
    threads: int = 1
    cache_dir: str | None = None
    command: str | None = None  # the command line that started the job: recorded in the library it writes

    def __post_init__(self) -> None:
        if self.paired not in PAIRED_CHOICES:
            raise ConfigError(f"expected one of {list(PAIRED_CHOICES)}, got {self.paired!r}", field="paired")
        if self.train and self.checkpoint is not None:
            raise ConfigError("train from scratch or use a given checkpoint, not both", field="train")
