"""What the search minimises: the SuperTransformer's validation loss of a SubTransformer (inherited weights).

HAT scores every candidate on the whole validation set and re-scores unchanged parents every iteration (750 of
its 3,750 passes per constraint). Here scores are cached by configuration id, shared across constraints and search
modes, and computed on a fixed validation subset whose size is stated with every result. On a CPU with bfloat16
arithmetic (AVX-512 BF16) the passes run under bfloat16 autocast: 1.77x faster on this machine's AMD EPYC at one
thread, losses within 0.001 bits of float32 (docs/search.md). With ``workers`` > 1 the uncached candidates of a
generation are scored in that many forked processes (one thread and one CPU each; the weights are shared
copy-on-write); the searches hand it a whole generation at a time (``score_all``).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.pool
import os
import random
from collections.abc import Sequence
from multiprocessing.sharedctypes import Synchronized

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


_IN_WORKER: LossFitness | None = None  # the fitness a forked worker inherited


def _start_worker(cpus: list[int], counter: Synchronized) -> None:
    """One thread on a CPU of its own: the workers share no cores with each other."""
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    torch.set_num_threads(1)
    os.sched_setaffinity(0, {cpus[index % len(cpus)]})


def _worker_loss(config: SubTransformerConfig) -> float:
    assert _IN_WORKER is not None
    return _IN_WORKER.compute(config)


class LossFitness:
    """Validation loss (bits per target token, label-smoothed as HAT) with a score cache by configuration id."""

    def __init__(self, model: SuperTransformer, vocab: Vocabulary, valid: ParallelCorpus, max_tokens: int = 4096,
                 label_smoothing: float = 0.1, precision: str = "auto", workers: int = 1) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.model = model.eval()
        self.precision = resolve_precision(precision)
        self.workers = workers
        self.cpus = sorted(os.sched_getaffinity(0))  # the workers' CPUs
        self._pool: multiprocessing.pool.Pool | None = None
        self.sentences = len(valid.src)
        self.batches: list[Batch] = TokenBatcher([vocab.encode(s) for s in valid.src],
                                                 [vocab.encode(s) for s in valid.tgt], max_tokens, shuffle=False,
                                                 max_positions=10**6).epoch(0)
        self.label_smoothing = label_smoothing
        self.cache: dict[str, float] = {}
        self.evaluations = 0  # forward passes over the subset actually run
        self.lookups = 0

    def compute(self, config: SubTransformerConfig) -> float:
        """One forward pass over the subset, uncached."""
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bfloat16"):
            return validation_loss(self.model, self.batches, config, self.label_smoothing)[0]

    def __call__(self, config: SubTransformerConfig) -> float:
        self.lookups += 1
        key = config.id
        if key not in self.cache:
            self.cache[key] = self.compute(config)
            self.evaluations += 1
        return self.cache[key]

    def many(self, configs: Sequence[SubTransformerConfig]) -> list[float]:
        """Scores of ``configs``; the uncached ones in the worker processes when there are several."""
        todo = list({c.id: c for c in configs if c.id not in self.cache}.values())
        if self.workers > 1 and len(todo) > 1:
            for config, loss in zip(todo, self._workers().map(_worker_loss, todo, chunksize=1), strict=True):
                self.cache[config.id] = loss
            self.evaluations += len(todo)  # the lookups below find them cached: hits = lookups - evaluations
        return [self(c) for c in configs]

    def _workers(self) -> multiprocessing.pool.Pool:
        global _IN_WORKER
        if self._pool is None:
            _IN_WORKER = self  # inherited by the forked workers, with the model's weights
            context = multiprocessing.get_context("fork")
            self._pool = context.Pool(self.workers, _start_worker, (self.cpus, context.Value("i", 0)))
            _IN_WORKER = None
        return self._pool

    def __enter__(self) -> LossFitness:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the worker processes (a later ``many`` starts them again)."""
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    @property
    def hits(self) -> int:
        return self.lookups - self.evaluations
