"""A translator that keeps meeting a latency budget by switching operating points of one SuperTransformer.

All points share the SuperTransformer's weights: a switch is a look-up of the point's cached weight views (no
copy, no reload). Each point gets a cost model from a short calibration with the measurement protocol (encoder
and decoder time for a 30-token sentence), scaled to each sentence's length; the slowdown tracker turns it into
what this request should take now, and the policy picks the point. A request runs entirely on the point chosen
when it started, and its result says which point that was and how long it took.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from dynhat.latency.measure import measure_latency
from dynhat.model.supertransformer import SuperTransformer
from dynhat.runtime.controller import Candidate, HysteresisPolicy, Policy
from dynhat.runtime.monitor import ResourceMonitor, SlowdownTracker
from dynhat.search.points import OperatingPoint, PointLibrary
from dynhat.translate.translator import TextVocabulary, Translator

CALIBRATION_TOKENS = 30


@dataclass(frozen=True)
class PointCost:
    """A point's latency model: the protocol's encoder and decoder times for 30 tokens, scaled per token, plus
    what serving a real sentence adds (tokenizing, beam bookkeeping, early stop): ``overhead_ms + scale x`` the
    protocol's estimate, fitted on real translations at calibration time."""

    encoder_ms: float
    decoder_ms: float
    overhead_ms: float = 0.0
    scale: float = 1.0

    def protocol_ms(self, src_tokens: int, out_tokens: int) -> float:
        return (self.encoder_ms * src_tokens + self.decoder_ms * out_tokens) / CALIBRATION_TOKENS

    def expected_ms(self, src_tokens: int, out_tokens: int) -> float:
        return self.overhead_ms + self.scale * self.protocol_ms(src_tokens, out_tokens)


@dataclass(frozen=True)
class TranslationResult:
    text: str
    point: str  # operating point id
    point_index: int
    latency_ms: float
    expected_ms: float
    budget_ms: float
    within_budget: bool
    src_tokens: int
    out_tokens: int
    switched: bool
    switch_ms: float | None  # decision -> the new point's weights in use (a cached look-up)
    slowdown: float  # the tracker's value after this request

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SwitchEvent:
    at_s: float
    from_point: int | None
    to_point: int
    switch_ms: float


class DynamicTranslator:
    def __init__(self, model: SuperTransformer, vocab: TextVocabulary, library: PointLibrary, budget_ms: float,
                 policy: Policy | None = None, beam: int = 4, calibrate_runs: int = 10,
                 costs: Sequence[PointCost] | None = None, max_budget_ms: float = 60_000.0,
                 calibration_sentences: Sequence[str] | None = None) -> None:
        if not library.points:
            raise ValueError("the operating-point library is empty")
        self.model, self.vocab, self.beam = model.eval(), vocab, beam
        unique: dict[str, OperatingPoint] = {}
        for p in library.sorted():  # one point may win several constraints: serve it once
            unique.setdefault(p.id, p)
        self.points: list[OperatingPoint] = list(unique.values())
        self.library = library
        self.policy = policy or HysteresisPolicy()
        self.max_budget_ms = max_budget_ms
        self.budget_ms = self._check_budget(budget_ms)
        self.translators = [Translator(model, vocab, p.config, beam=beam) for p in self.points]
        for p in self.points:
            model.weights(p.config)  # slice every point once now: later switches are look-ups
        self.costs = list(costs) if costs is not None else self.calibrate(calibrate_runs, calibration_sentences)
        if len(self.costs) != len(self.points):
            raise ValueError(f"{len(self.costs)} costs for {len(self.points)} points")
        self.slowdown = SlowdownTracker()
        self.monitor = ResourceMonitor()
        self.length_ratio = 1.2  # output / source subwords, learned from traffic
        self.current: int | None = None
        self.switches: list[SwitchEvent] = []
        self.recent: deque[TranslationResult] = deque(maxlen=100)
        self._lock = threading.Lock()
        self._start = time.perf_counter()

    # ------------------------------------------------------------------ configuration
    def _check_budget(self, budget_ms: float) -> float:
        if not 0 < budget_ms <= self.max_budget_ms:
            raise ValueError(f"budget {budget_ms} ms is out of range (0, {self.max_budget_ms:g}]")
        return float(budget_ms)

    def set_budget(self, budget_ms: float) -> None:
        self.budget_ms = self._check_budget(budget_ms)

    def calibrate(self, runs: int = 10, sentences: Sequence[str] | None = None) -> list[PointCost]:
        """Each point's cost model at the current thread count: the measurement protocol's encoder and decoder
        times, then a least-squares fit of real translations of ``sentences`` (default: 12 synthetic ones of
        4-40 subwords) against them, which adds what the protocol leaves out of serving a sentence."""
        import numpy as np
        import torch

        threads = torch.get_num_threads()
        sentences = list(sentences) if sentences is not None else self._synthetic_sentences()
        costs = []
        for p, translator in zip(self.points, self.translators, strict=True):
            r = measure_latency(self.model, p.config, src_len=CALIBRATION_TOKENS, tgt_len=CALIBRATION_TOKENS,
                                beam=self.beam, runs=runs, warmup=2, threads=threads)
            base = PointCost(r.encoder_ms, r.decoder_ms)
            translator.hypotheses(sentences[:1])  # warm-up
            rows, observed = [], []
            for sentence in sentences:
                start = time.perf_counter()
                hyp = translator.hypotheses([sentence])[0]
                observed.append((time.perf_counter() - start) * 1e3)
                rows.append([1.0, base.protocol_ms(len(self.vocab.encode(sentence)) + 1, len(hyp.tokens) + 1)])
            (overhead, scale), *_ = np.linalg.lstsq(np.array(rows), np.array(observed), rcond=None)
            if scale <= 0 or overhead < 0:  # degenerate fit (too few or too similar sentences): scale only
                overhead, scale = 0.0, float(np.sum(observed) / np.sum([row[1] for row in rows]))
            costs.append(PointCost(r.encoder_ms, r.decoder_ms, float(overhead), float(scale)))
        self.costs = costs
        return costs

    def _synthetic_sentences(self, count: int = 12, seed: int = 0) -> list[str]:
        """Sentences of ordinary subwords, 4 to 40 long: timing needs lengths, not meaning."""
        import random

        rng = random.Random(seed)
        vocab_size = self.model.weights(self.points[0].config).decoder_embed.shape[0]
        out = []
        for i in range(count):
            length = 4 + round(36 * i / max(1, count - 1))
            ids = [rng.randrange(4, vocab_size) for _ in range(length)]
            out.append(self.vocab.decode(ids))
        return [s for s in out if self.vocab.encode(s)] or ["."]

    # ------------------------------------------------------------------ serving
    def choose(self, src_tokens: int, budget_ms: float) -> tuple[int, float]:
        """(point index, expected ms) for a sentence of ``src_tokens`` subwords under ``budget_ms``, now."""
        out_guess = max(1, round(self.length_ratio * src_tokens))
        slow = self.slowdown.value
        candidates = [Candidate(i, c.expected_ms(src_tokens + 1, out_guess + 1) * slow, p.valid_loss)
                      for i, (p, c) in enumerate(zip(self.points, self.costs, strict=True))]
        index = self.policy.choose(candidates, budget_ms, self.current)
        return index, candidates[index].expected_ms

    def translate_one(self, sentence: str, budget_ms: float | None = None) -> TranslationResult:
        budget = self.budget_ms if budget_ms is None else self._check_budget(budget_ms)
        src_tokens = len(self.vocab.encode(sentence))
        with self._lock:
            decided = time.perf_counter()
            index, expected = self.choose(src_tokens, budget)
            switched = index != self.current
            switch_ms = None
            if switched:
                self.model.weights(self.points[index].config)  # the switch itself: a cached look-up
                switch_ms = (time.perf_counter() - decided) * 1e3
                self.switches.append(SwitchEvent(decided - self._start, self.current, index, switch_ms))
                self.current = index
        start = time.perf_counter()
        hyp = self.translators[index].hypotheses([sentence])[0]
        latency = (time.perf_counter() - start) * 1e3
        text = self.vocab.decode(hyp.tokens)
        out_tokens = len(hyp.tokens)
        with self._lock:
            actual = self.costs[index].expected_ms(src_tokens + 1, out_tokens + 1)
            slow = self.slowdown.update(latency, actual)
            if src_tokens:
                self.length_ratio += 0.1 * (out_tokens / src_tokens - self.length_ratio)
        result = TranslationResult(text, self.points[index].id, index, latency, expected, budget, latency <= budget,
                                   src_tokens, out_tokens, switched, switch_ms, slow)
        self.recent.append(result)
        return result

    def translate(self, sentences: Sequence[str], budget_ms: float | None = None) -> list[TranslationResult]:
        """One result per sentence; each sentence is a request of its own under the budget."""
        return [self.translate_one(s, budget_ms) for s in sentences]

    def status(self) -> dict[str, Any]:
        recent = list(self.recent)[-20:]
        return {
            "budget_ms": self.budget_ms,
            "active_point": None if self.current is None else self.points[self.current].id,
            "slowdown": round(self.slowdown.value, 4),
            "resources": self.monitor.read().to_dict(),
            "points": [{"id": p.id, "valid_loss": p.valid_loss, "bleu": p.bleu,
                        "calibrated_ms": round(c.expected_ms(CALIBRATION_TOKENS, CALIBRATION_TOKENS), 3)}
                       for p, c in zip(self.points, self.costs, strict=True)],
            "recent_latency_ms": [round(r.latency_ms, 2) for r in recent],
            "switches": len(self.switches),
        }
