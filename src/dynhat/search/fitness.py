"""What the search minimises: the SuperTransformer's validation loss of a SubTransformer (inherited weights).

HAT scores every candidate on the whole validation set and re-scores unchanged parents every iteration (750 of
its 3,750 passes per constraint). Here scores are cached by configuration id, shared across constraints and search
modes, and computed on a fixed validation subset whose size is stated with every result. On a CPU with bfloat16
arithmetic (AVX-512 BF16) the passes run under bfloat16 autocast: 1.55x faster on this machine's AMD EPYC at one
thread, losses within 0.001 bits of float32 (docs/search.md).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

from dynhat.data.batching import Batch, TokenBatcher
from dynhat.data.corpus import ParallelCorpus
from dynhat.data.vocab import Vocabulary
from dynhat.model.supertransformer import SuperTransformer
from dynhat.space.config import SubTransformerConfig
from dynhat.train.trainer import validation_loss


def validation_subset(corpus: ParallelCorpus, size: int | None, seed: int = 0) -> ParallelCorpus:
    """``size`` pairs drawn without replacement with ``seed`` (all of them when ``size`` is None or larger)."""
    n = len(corpus.src)
    if size is None or size >= n:
        return corpus
    rows = sorted(random.Random(seed).sample(range(n), size))
    return ParallelCorpus([corpus.src[i] for i in rows], [corpus.tgt[i] for i in rows], corpus.src_lang,
                          corpus.tgt_lang, f"{corpus.name}[{size} of {n}, seed {seed}]")


PRECISIONS = ("auto", "float32", "bfloat16")


def resolve_precision(precision: str) -> str:
    """``auto``: bfloat16 where the CPU has native bfloat16 arithmetic (elsewhere autocast emulates it, slower)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision
    native = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
    return "bfloat16" if native else "float32"


class LossFitness:
    """Validation loss (bits per target token, label-smoothed as HAT) with a score cache by configuration id."""

    def __init__(self, model: SuperTransformer, vocab: Vocabulary, valid: ParallelCorpus, max_tokens: int = 4096,
                 label_smoothing: float = 0.1, precision: str = "auto") -> None:
        self.model = model.eval()
        self.precision = resolve_precision(precision)
        self.sentences = len(valid.src)
        self.batches: list[Batch] = TokenBatcher([vocab.encode(s) for s in valid.src],
                                                 [vocab.encode(s) for s in valid.tgt], max_tokens, shuffle=False,
                                                 max_positions=10**6).epoch(0)
        self.label_smoothing = label_smoothing
        self.cache: dict[str, float] = {}
        self.evaluations = 0  # forward passes over the subset actually run
        self.lookups = 0

    def __call__(self, config: SubTransformerConfig) -> float:
        self.lookups += 1
        key = config.id
        if key not in self.cache:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bfloat16"):
                self.cache[key] = validation_loss(self.model, self.batches, config, self.label_smoothing)[0]
            self.evaluations += 1
        return self.cache[key]

    def many(self, configs: Sequence[SubTransformerConfig]) -> list[float]:
        return [self(c) for c in configs]

    @property
    def hits(self) -> int:
        return self.lookups - self.evaluations
