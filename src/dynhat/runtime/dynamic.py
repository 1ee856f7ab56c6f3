"""A translator that keeps meeting a latency budget by switching operating points of one SuperTransformer.

All points share the SuperTransformer's weights: a switch is a look-up of the point's weight record, prepared when
the translator is built (``model.serving``: views, with a point's strided slices copied contiguous; no copy and no
reload on a switch). A point decodes with its own beam (a searched SubTransformer at beam 4, or a greedy decoding
variant of it); the translator serves the library's efficient points (``PointLibrary.efficient``), ranked by quality
(``PointLibrary.quality``: BLEU on the library's test sentences, then validation loss, then the wider beam). Each
point has a cost model at each thread count, given to the constructor (``runtime.costs.calibrate``: a short
calibration with the measurement protocol, encoder and decoder time for a 30-token sentence at the point's beam; or
a saved ``CostModel``), scaled to each sentence's length; the slowdown tracker of that thread count turns it into
what this request should take now, and the policy picks the point. The thread count follows the cores that other
processes leave free: intra-op threads that must share a core with a busy process stall every parallel region
(measured in docs/runtime.md), so when cores are taken the translator uses fewer threads rather than fight for them.
A request runs entirely on the point chosen when it started, and its result says which point and thread count that
was and how long it took.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from dynhat.errors import BudgetUnmeetable
from dynhat.inference.points import OperatingPoint, PointLibrary
from dynhat.runtime.backends import Backend, DynhatBackend
from dynhat.runtime.controller import Candidate, HysteresisPolicy, Policy
from dynhat.runtime.costs import CALIBRATION_TOKENS, CostModel, PointCost
from dynhat.runtime.monitor import FreeCores, ResourceMonitor, SlowdownTracker, cgroup_quota_cpus
from dynhat.translate.interface import TextVocabulary

#: seconds between readings of the CPUs the process may use (affinity, cgroup quota): a change is seen that fast
CAP_REFRESH_S = 0.2

if TYPE_CHECKING:
    from dynhat.model.supertransformer import SuperTransformer


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
    threads: int = 1  # intra-op threads this request ran with

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SwitchEvent:
    at_s: float
    from_point: int | None
    to_point: int
    switch_ms: float


class DynamicTranslator:
    """Serves each request with the best point (and thread count) expected to meet the budget now.

    ``threads`` caps the intra-op threads (default: torch's current count); with ``adapt_threads`` the translator
    uses fewer when other processes take cores, or when a count runs slower than calibrated; without it each point
    runs at the count its calibration found fastest. ``costs`` is the points' cost model (``runtime.costs``: from
    ``calibrate`` or ``CostModel.load``, or given as one list per thread count or one list for every count); the
    translator measures nothing itself. ``backend`` runs the points (``runtime.backends``: dynhat float32, the
    default, or int8, or CTranslate2); the cost model must be calibrated with the same backend. ``model`` is the
    SuperTransformer the default backend serves; None with a backend of its own (an engine folder, which needs
    no torch).
    """

    def __init__(self, model: SuperTransformer | None, vocab: TextVocabulary, library: PointLibrary, budget_ms: float,
                 policy: Policy | None = None, *,
                 costs: CostModel | Sequence[PointCost] | Mapping[int, Sequence[PointCost]],
                 max_budget_ms: float = 60_000.0, threads: int | None = None, adapt_threads: bool = True,
                 backend: Backend | None = None) -> None:
        if not library.points:
            raise ValueError("the operating-point library is empty")
        self.model, self.vocab = None if model is None else model.eval(), vocab
        self.points: list[OperatingPoint] = library.efficient()
        # the policies compare one number, lower is better: the rank by quality
        order = sorted(range(len(self.points)), key=lambda i: library.quality(self.points[i]))
        self.quality_rank = [order.index(i) for i in range(len(self.points))]
        self.library = library
        self.policy = policy or HysteresisPolicy()
        self.max_budget_ms = max_budget_ms
        self.budget_ms = self._check_budget(budget_ms)
        if threads is None:
            threads = costs.threads if isinstance(costs, CostModel) else _torch_threads()
        self.calibrated_threads = threads
        self.max_threads = self.calibrated_threads
        self.adapt_threads = adapt_threads
        # the backend slices (or quantizes, or loads) every point once now: later switches are look-ups
        if backend is None:
            if self.model is None:
                raise ValueError("give the model, or the backend that serves the points")
            backend = DynhatBackend(self.model, vocab, self.points)
        self.backend = backend
        self.translators = [self.backend.translator(p) for p in self.points]
        if not isinstance(costs, CostModel):
            costs = CostModel.given(self.points, costs, self.calibrated_threads)
        costs.check(self.points, self.calibrated_threads)
        self.costs_by_threads = costs.by_threads
        # output / source subwords per point (an under-trained point may repeat itself and write half as much
        # again): from the calibration translations, then from the point's own traffic
        self.length_ratios = list(costs.length_ratios)
        self.slowdowns = {k: SlowdownTracker() for k in range(1, self.calibrated_threads + 1)}
        self.monitor = ResourceMonitor()
        self.free_cores = FreeCores()
        self.usable = self.max_threads
        self.threads = self.max_threads
        self.typical_src: float | None = None  # source subwords of a typical request, learned from traffic
        self.current: int | None = None
        self.switches: list[SwitchEvent] = []
        self.refused = 0  # strict requests refused: no point expected within their budget
        self.recent: deque[TranslationResult] = deque(maxlen=100)
        self._lock = threading.Lock()
        self._start = time.perf_counter()
        self._cap, self._cap_read_at = 1, -math.inf

    # ------------------------------------------------------------------ configuration
    def _check_budget(self, budget_ms: float) -> float:
        if not 0 < budget_ms <= self.max_budget_ms:
            raise ValueError(f"budget {budget_ms} ms is out of range (0, {self.max_budget_ms:g}]")
        return float(budget_ms)

    def set_budget(self, budget_ms: float) -> None:
        self.budget_ms = self._check_budget(budget_ms)

    def set_threads(self, threads: int) -> None:
        """Cap the intra-op threads (up to the calibrated count), e.g. when the process is given fewer cores."""
        if not 1 <= threads <= self.calibrated_threads:
            raise ValueError(f"threads {threads}: calibrated for 1..{self.calibrated_threads}")
        with self._lock:
            self.max_threads = threads

    @property
    def costs(self) -> list[PointCost]:
        """Each point's cost model at the calibrated (full) thread count."""
        return self.costs_by_threads[self.calibrated_threads]

    @property
    def slowdown(self) -> SlowdownTracker:
        return self.slowdowns[self.threads]

    def full_resource_ms(self, index: int, src_tokens: int, out_tokens: int) -> float:
        """Point ``index``'s calibrated latency for a sentence at its best thread count on an idle machine."""
        return min(c[index].expected_ms(src_tokens, out_tokens) for c in self.costs_by_threads.values())

    # ------------------------------------------------------------------ serving
    def usable_threads(self) -> int:
        """Threads worth using now: the cap, the affinity set, the cgroup quota, and the cores others leave free.

        Fewer at once when a core is taken (free < threads - 0.25); more only when the extra core is clearly free
        (free >= threads + 0.9), so a reading near the line does not flip it. A change restarts the slowdown
        trackers (what they learned describes a machine that is no longer there) at the fair-share slowdown
        ``(others + k) / cpus`` of k threads beside the others' busy cores, which the next requests then correct.
        """
        cap = min(self.max_threads, self._cpu_cap())
        if not self.adapt_threads:
            return cap
        free = self.free_cores.read()
        usable = min(self.usable, cap)
        if free < usable - 0.25:
            usable = max(1, math.floor(free + 0.25))
        elif usable < cap and free >= usable + 0.9:
            usable = min(cap, math.floor(free + 0.1))
        if usable != self.usable:
            # start from a fair share of the CPUs: k threads among the others' busy cores get n / (others + k)
            cpus = self.free_cores.cpus
            others = max(0.0, cpus - free)
            self.slowdowns = {k: SlowdownTracker(initial=max(1.0, (others + k) / cpus)) for k in self.slowdowns}
            self.usable = usable
        return usable

    def _cpu_cap(self) -> int:
        """CPUs the process may use (its affinity set and cgroup quota), read again at most every
        ``CAP_REFRESH_S``: reading the quota is a file read that cost ~0.1 ms a request right after a translation
        (measured on the engine backend, where a translation of the fastest point takes ~6 ms)."""
        now = time.monotonic()
        if now - self._cap_read_at >= CAP_REFRESH_S:
            cap = len(os.sched_getaffinity(0))
            quota = cgroup_quota_cpus()
            if quota is not None:
                cap = min(cap, max(1, math.floor(quota)))
            self._cap, self._cap_read_at = cap, now
        return self._cap

    def choose(self, src_tokens: int, budget_ms: float) -> tuple[int, float, int]:
        """(point index, expected ms, threads) for a sentence of ``src_tokens`` subwords under ``budget_ms``, now."""
        typical = src_tokens if self.typical_src is None else self.typical_src
        usable = self.usable_threads()
        candidates, threads = [], []
        levels = {k: self.slowdowns[k].planning() for k in range(1, usable + 1)}  # (slowdown, excess ms)
        for i in range(len(self.points)):
            # each point at the thread count expected fastest now: its calibration scaled by that count's tracker
            # (restarted at a fair share whenever the usable count changes, so a count not used since is judged
            # by the machine's state; one used and found slower than calibrated loses to the other). Without
            # adapt_threads, by the calibration alone: the count does not follow the machine.
            calibrated = {k: self._calibrated_ms(k, i, src_tokens) for k in range(1, usable + 1)}
            plans = {k: levels[k][0] * ms + levels[k][1] for k, ms in calibrated.items()}
            ranking = plans if self.adapt_threads else calibrated
            best = min(ranking, key=ranking.__getitem__)
            slowdown, excess = levels[best]
            candidates.append(Candidate(i, plans[best], self.quality_rank[i],
                                        slowdown * self._calibrated_ms(best, i, typical) + excess))
            threads.append(best)
        index = self.policy.choose(candidates, budget_ms, self.current)
        return index, candidates[index].expected_ms, threads[index]

    def _calibrated_ms(self, threads: int, index: int, src_tokens: float) -> float:
        out_guess = max(1.0, self.length_ratios[index] * src_tokens)
        return self.costs_by_threads[threads][index].expected_ms(src_tokens + 1, out_guess + 1)

    def translate_one(self, sentence: str, budget_ms: float | None = None, strict: bool = False
                      ) -> TranslationResult:
        """Translate on the point chosen now. ``strict``: refuse (``BudgetUnmeetable``, before any work) when even
        that point is expected to miss the budget, instead of answering late (admission control)."""
        budget = self.budget_ms if budget_ms is None else self._check_budget(budget_ms)
        ids = self.vocab.encode(sentence)
        src_tokens = len(ids)
        with self._lock:
            index, expected, threads = self.choose(src_tokens, budget)
            if strict and expected > budget:
                self.refused += 1
                raise BudgetUnmeetable(budget, expected, self.points[index].id)
            decided = time.perf_counter()
            switched = index != self.current
            switch_ms = None
            if switched:
                self.backend.switch(self.points[index])  # the switch itself: a cached look-up
                switch_ms = (time.perf_counter() - decided) * 1e3
                self.switches.append(SwitchEvent(decided - self._start, self.current, index, switch_ms))
                self.current = index
            self.backend.set_threads(threads)
            self.threads = threads
        start = time.perf_counter()
        hyp = self.translators[index].hypotheses_of([ids])[0]
        latency = (time.perf_counter() - start) * 1e3
        text = self.vocab.decode(hyp.tokens)
        out_tokens = len(hyp.tokens)
        with self._lock:
            actual = self.costs_by_threads[threads][index].expected_ms(src_tokens + 1, out_tokens + 1)
            slow = self.slowdowns[threads].update(latency, actual)
            if src_tokens:
                self.length_ratios[index] += 0.1 * (out_tokens / src_tokens - self.length_ratios[index])
                self.typical_src = src_tokens if self.typical_src is None else (
                    self.typical_src + 0.1 * (src_tokens - self.typical_src))
        result = TranslationResult(text, self.points[index].id, index, latency, expected, budget, latency <= budget,
                                   src_tokens, out_tokens, switched, switch_ms, slow, threads)
        self.recent.append(result)
        return result

    def translate(self, sentences: Sequence[str], budget_ms: float | None = None, strict: bool = False
                  ) -> list[TranslationResult]:
        """One result per sentence; each sentence is a request of its own under the budget."""
        return [self.translate_one(s, budget_ms, strict) for s in sentences]

    def status(self) -> dict[str, Any]:
        recent = list(self.recent)[-20:]
        return {
            "budget_ms": self.budget_ms,
            "active_point": None if self.current is None else self.points[self.current].id,
            "slowdown": round(self.slowdown.value, 4),
            "threads": self.threads,
            "free_cores": round(self.free_cores.value, 2),
            "resources": self.monitor.read().to_dict(),
            "points": [{"id": p.id, "valid_loss": p.valid_loss, "beam": p.beam, "bleu": p.bleu,
                        "bleu_int8": p.bleu_int8,
                        "calibrated_ms": round(self.full_resource_ms(i, CALIBRATION_TOKENS, CALIBRATION_TOKENS), 3),
                        "length_ratio": round(self.length_ratios[i], 3)}
                       for i, p in enumerate(self.points)],
            "recent_latency_ms": [round(r.latency_ms, 2) for r in recent],
            "switches": len(self.switches),
            "refused": self.refused,
        }


def _torch_threads() -> int:
    """torch's intra-op threads now: the default cap of a translator over dynhat's own backend."""
    import torch

    return torch.get_num_threads()
