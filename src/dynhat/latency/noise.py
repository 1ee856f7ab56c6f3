"""Is this machine steady enough for a collection whose drift probes are minutes apart?

A probe every ten rows corrects slow drift. On a VM whose speed moves by tens of percent within seconds it cannot,
and only a paired collection (each timed run right after one of the reference) gets the predictor's error under
3 % (docs/latency.md). Pairing doubles the measuring time, so it is worth it only where needed: ``check_noise``
measures the reference a few times back to back (seconds) and calls the machine noisy when those probes vary by
more than ``NOISY_CV_PCT``: a steady VM's probes vary by under 1 %, a noisy one's by 7-12 % (docs/results.md).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from dynhat.inference.measure import measure_latency
from dynhat.model.seq2seq import Seq2SeqModel
from dynhat.space import SubTransformerConfig

#: Coefficient of variation (%) of back-to-back reference probes above which a collection is paired.
NOISY_CV_PCT = 3.0


@dataclass(frozen=True)
class NoiseCheck:
    probes: int
    reference_ms: float  # the probes' median
    cv_pct: float
    spread_pct: float  # (slowest - fastest) / median
    threshold_pct: float

    @property
    def noisy(self) -> bool:
        return self.cv_pct > self.threshold_pct

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"noisy": self.noisy}


def check_noise(model: Seq2SeqModel, reference: SubTransformerConfig, probes: int = 10, runs: int = 5,
                threads: int = 1, cpus: Sequence[int] | None = None, threshold_pct: float = NOISY_CV_PCT
                ) -> NoiseCheck:
    """``probes`` measurements of ``reference`` (``runs`` timed runs each, the protocol's trimmed mean), back to
    back on ``cpus``; their spread says whether the machine's speed moves within seconds."""
    if probes < 3 or runs < 1:
        raise ValueError(f"need at least 3 probes of 1 run, got {probes} of {runs}")
    totals = [measure_latency(model, reference, runs=runs, warmup=3 if i == 0 else 1, threads=threads,
                              cpus=cpus).total_ms for i in range(probes)]
    median = statistics.median(totals)
    return NoiseCheck(probes, round(median, 3), round(100 * statistics.pstdev(totals) / statistics.fmean(totals), 2),
                      round(100 * (max(totals) - min(totals)) / median, 2), threshold_pct)
