"""What each operating point costs: its latency model at each thread count (``CostModel``), measured once by
``calibrate`` (seconds per point and thread count), saved and loaded as JSON, and handed to the translator, so
that building a translator measures nothing and a service can start from a cost model calibrated before.
"""

from __future__ import annotations

import json
import random
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dynhat.errors import DataError
from dynhat.inference.points import OperatingPoint
from dynhat.io import atomic_write_text
from dynhat.translate.interface import TextVocabulary

if TYPE_CHECKING:
    from dynhat.model.supertransformer import SuperTransformer
    from dynhat.runtime.backends import Backend

CALIBRATION_TOKENS = 30
DEFAULT_LENGTH_RATIO = 1.2  # output / source subwords before any real translation
FORMAT = "dynhat-cost-model"
VERSION = 1


@dataclass(frozen=True)
class PointCost:
    """A point's latency model: the protocol's encoder and decoder times for 30 tokens, scaled per token, plus
    what serving a real sentence adds (tokenizing, beam bookkeeping, early stop): ``overhead_ms + scale x`` the
    protocol's estimate, fitted on real translations at calibration time."""

    encoder_ms: float
    decoder_ms: float
    overhead_ms: float = 0.0
    scale: float = 1.0

    def protocol_ms(self, src_tokens: float, out_tokens: float) -> float:
        return (self.encoder_ms * src_tokens + self.decoder_ms * out_tokens) / CALIBRATION_TOKENS

    def expected_ms(self, src_tokens: float, out_tokens: float) -> float:
        return self.overhead_ms + self.scale * self.protocol_ms(src_tokens, out_tokens)


@dataclass
class CostModel:
    """Each served point's ``PointCost`` at 1..``threads`` threads and its first output/source length ratio, for
    the points ``points`` names (ids, in the order of ``PointLibrary.efficient()``)."""

    points: list[str]
    by_threads: dict[int, list[PointCost]]
    length_ratios: list[float]

    @property
    def threads(self) -> int:
        return max(self.by_threads)

    @classmethod
    def given(cls, points: Sequence[OperatingPoint], costs: Sequence[PointCost] | Mapping[int, Sequence[PointCost]],
              threads: int) -> CostModel:
        """Costs known already: one list per thread count (``{1: [...], 2: [...]}``), or one list for every count
        up to ``threads``; the default length ratio."""
        by_threads = ({int(k): list(v) for k, v in costs.items()} if isinstance(costs, Mapping)
                      else {k: list(costs) for k in range(1, threads + 1)})
        return cls([p.id for p in points], by_threads, [DEFAULT_LENGTH_RATIO] * len(points))

    def check(self, points: Sequence[OperatingPoint], threads: int, source: str = "cost model") -> None:
        """Refuse a cost model of other points, or without a cost for each point at each of 1..``threads``."""
        ids = [p.id for p in points]
        if self.points != ids:
            raise DataError(f"{source}: points: calibrated for {self.points}, the library serves {ids}")
        for k in range(1, threads + 1):
            if len(self.by_threads.get(k, ())) != len(points):
                raise DataError(f"{source}: costs at {k} thread(s): {len(self.by_threads.get(k, ()))} for "
                                f"{len(points)} points")

    def save(self, path: str | Path) -> None:
        data = {"format": FORMAT, "version": VERSION, "points": self.points, "length_ratios": self.length_ratios,
                "costs": {str(k): [asdict(c) for c in v] for k, v in sorted(self.by_threads.items())}}
        atomic_write_text(path, json.dumps(data, indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> CostModel:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DataError(f"{path}: not a readable cost model ({err})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("version") != VERSION:
            raise DataError(f"{path}: not a dynhat cost model (format {FORMAT!r}, version {VERSION} expected)")
        try:
            by_threads = {int(k): [PointCost(**c) for c in v] for k, v in data["costs"].items()}
            model = cls([str(p) for p in data["points"]], by_threads, [float(r) for r in data["length_ratios"]])
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise DataError(f"{path}: malformed cost model ({err})") from None
        if not by_threads or len(model.length_ratios) != len(model.points):
            raise DataError(f"{path}: expected costs and one length ratio per point")
        return model


def calibrate(model: SuperTransformer | None, vocab: TextVocabulary, points: Sequence[OperatingPoint], threads: int,
              runs: int = 10, sentences: Sequence[str] | None = None, backend: Backend | None = None) -> CostModel:
    """Each point's cost model at 1..``threads`` threads: the measurement protocol's encoder and
    decoder times, then one least-squares fit per beam, over its points' real translations of ``sentences``
    (default: 12 synthetic ones of 4-40 subwords), of what serving adds to the protocol's estimate.

    The fit is shared by the points of a thread count and beam: what serving adds (tokenizing, the beam's
    bookkeeping, the per-call overhead) depends on the beam, not on the point's widths, and a fit per point on
    a dozen noisy timings can give the fastest point the largest overhead, which ranked it slower than the next
    one and made the controller fall back to the wrong point when nothing fitted. Real
    ``sentences`` also give each point's first output/source length ratio (the default 1.2 guessed outputs
    ~50 % too long on Multi30k, which inflated every estimate and the scenario's budgets until traffic
    corrected it; and the points' ratios differ by up to 1.4x, docs/runtime.md).

    ``backend``: what serves the points (``runtime.backends``; default dynhat float32 over ``model``, which
    may be None when a backend is given); calibrate with the backend the translator will serve with."""
    if backend is None:
        from dynhat.runtime.backends import DynhatBackend

        if model is None:
            raise ValueError("calibrate: give the model or the backend that serves the points")
        backend = DynhatBackend(model.eval(), vocab, points)
    translators = [backend.translator(p) for p in points]
    real = sentences is not None
    sentences = list(sentences) if real else synthetic_sentences(vocab)
    by_threads: dict[int, list[PointCost]] = {}
    ratios = [DEFAULT_LENGTH_RATIO] * len(points)
    for k in range(1, threads + 1):
        with backend.pinned(k):
            by_threads[k], measured = _calibrate_at(backend, vocab, points, translators, k, runs, sentences)
        if real and k == threads:
            ratios = measured
    return CostModel([p.id for p in points], by_threads, ratios)


def _calibrate_at(backend: Backend, vocab: TextVocabulary, points: Sequence[OperatingPoint],
                  translators: Sequence[Any], threads: int, runs: int, sentences: Sequence[str]
                  ) -> tuple[list[PointCost], list[float]]:
    """Each point's cost model at ``threads`` threads (see ``calibrate``) and its output/source length ratio."""
    bases, estimated, observed = [], [], []
    beams = []  # of each timing
    ratios = [DEFAULT_LENGTH_RATIO] * len(points)
    sources = [vocab.encode(s) for s in sentences]  # as the runtime passes them: encoded once, outside the timing
    for i, (p, translator) in enumerate(zip(points, translators, strict=True)):
        base = PointCost(*backend.protocol_ms(p, runs, threads))
        bases.append(base)
        translator.hypotheses_of(sources[:1])  # warm-up
        src_total = out_total = 0
        for ids in sources:
            start = time.perf_counter()
            hyp = translator.hypotheses_of([ids])[0]
            observed.append((time.perf_counter() - start) * 1e3)
            src, out = len(ids), len(hyp.tokens)
            src_total, out_total = src_total + src, out_total + out
            estimated.append(base.protocol_ms(src + 1, out + 1))
            beams.append(p.beam)
        if src_total:
            ratios[i] = out_total / src_total
    fits = {}
    for beam in set(beams):  # observed = overhead + scale * estimated, least squares (no numpy in a service)
        x = [e for e, b in zip(estimated, beams, strict=True) if b == beam]
        y = [o for o, b in zip(observed, beams, strict=True) if b == beam]
        try:
            scale, overhead = statistics.linear_regression(x, y)
        except statistics.StatisticsError:  # fewer than two timings, or all estimates alike
            scale, overhead = -1.0, 0.0
        if scale <= 0 or overhead < 0:  # degenerate fit (too few or too similar sentences): scale only
            overhead, scale = 0.0, sum(y) / sum(x)
        fits[beam] = (float(overhead), float(scale))
    return [PointCost(b.encoder_ms, b.decoder_ms, *fits[p.beam]) for b, p in zip(bases, points, strict=True)], ratios


def synthetic_sentences(vocab: TextVocabulary, count: int = 12, seed: int = 0) -> list[str]:
    """Sentences of ordinary subwords, 4 to 40 long: timing needs lengths, not meaning."""
    rng = random.Random(seed)
    vocab_size = len(vocab)
    out = []
    for i in range(count):
        length = 4 + round(36 * i / max(1, count - 1))
        ids = [rng.randrange(4, vocab_size) for _ in range(length)]
        out.append(vocab.decode(ids))
    return [s for s in out if vocab.encode(s)] or ["."]
