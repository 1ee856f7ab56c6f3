"""What the process can use now, and how much slower than predicted it actually runs.

The system figures (cores in the affinity set, cgroup CPU quota, load from other processes, clock) explain a
slowdown; the observed-against-expected latency ratio measures it, whatever its cause, so the controller decides
from the ratio and the system figures are reported beside it.
"""

from __future__ import annotations

import math
import os
import statistics
import sys
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil


@dataclass(frozen=True)
class Resources:
    affinity_cpus: int
    quota_cpus: float | None  # cgroup v2 cpu.max (None: no limit or not readable)
    load_1m: float  # system run-queue length, all processes
    other_cpu_pct: float  # CPU used by other processes since the last reading, in % of one core
    cpu_mhz: float | None
    gpu: str | None  # None also in a process without torch (an engine service)
    torch_threads: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cgroup_quota_cpus(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return None if quota == "max" else int(quota) / int(period)


def busy_seconds(times: Any) -> float:
    """CPU seconds spent working in a ``psutil.cpu_times()`` reading (system-wide or one CPU's)."""
    return (times.user + times.system + getattr(times, "nice", 0.0) + getattr(times, "irq", 0.0)
            + getattr(times, "softirq", 0.0))


class ResourceMonitor:
    """Readings of the machine around this process; cheap enough to call per request (no sleeping)."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self._lock = threading.Lock()
        self._last = self._times()

    def _times(self) -> tuple[float, float, float]:
        own = self._process.cpu_times()
        return busy_seconds(psutil.cpu_times()), own.user + own.system, time.monotonic()

    def read(self) -> Resources:
        with self._lock:
            now = self._times()
            busy, own, wall = (b - a for a, b in zip(self._last, now, strict=True))
            self._last = now
        other = max(0.0, busy - own) / wall * 100 if wall > 0 else 0.0
        freq = psutil.cpu_freq()
        torch = sys.modules.get("torch")  # read only where the process uses it: importing it costs ~220 MB
        gpu = torch.cuda.get_device_name(0) if torch is not None and torch.cuda.is_available() else None
        return Resources(len(os.sched_getaffinity(0)), cgroup_quota_cpus(), os.getloadavg()[0], round(other, 1),
                         freq.current if freq else None, gpu, None if torch is None else torch.get_num_threads())


class FreeCores:
    """How many of this process's CPUs other processes leave free, from per-CPU busy time minus this process's own.

    Readings closer together than ``min_interval_s`` return the last estimate: per-CPU times tick every 10 ms, so a
    shorter window is mostly rounding. Intra-op threads beyond the free cores do not share a core gracefully (each
    parallel region waits for its slowest thread), which is why the runtime sizes its thread count from this.
    """

    def __init__(self, min_interval_s: float = 0.2) -> None:
        self.min_interval_s = min_interval_s
        self._process = psutil.Process()
        self._lock = threading.Lock()
        self._cpus = tuple(sorted(os.sched_getaffinity(0)))
        self._last = self._sample(self._cpus)
        self.value = float(len(self._cpus))

    def _sample(self, cpus: tuple[int, ...]) -> tuple[float, float, float]:
        per_cpu = psutil.cpu_times(percpu=True)
        own = self._process.cpu_times()
        busy = sum(busy_seconds(per_cpu[c]) for c in cpus if c < len(per_cpu))
        return busy, own.user + own.system, time.monotonic()

    def read(self) -> float:
        cpus = tuple(sorted(os.sched_getaffinity(0)))
        with self._lock:
            if cpus != self._cpus:  # the affinity changed: start a new window on the new set
                self._cpus, self._last, self.value = cpus, self._sample(cpus), float(len(cpus))
                return self.value
            if time.monotonic() - self._last[2] < self.min_interval_s:
                return self.value
            now = self._sample(cpus)
            busy, own, wall = (b - a for a, b in zip(self._last, now, strict=True))
            self._last = now
            others = max(0.0, busy - own) / wall if wall > 0 else 0.0
            self.value = max(0.0, len(cpus) - others)
            return self.value

    @property
    def cpus(self) -> int:
        return len(self._cpus)


class SlowdownTracker:
    """Observed / expected latency, smoothed: 1.0 = as calibrated, 2.0 = twice as slow.

    An exponential moving average in log space (a 2x slowdown and a 2x speed-up weigh the same), reset towards a
    new level quickly because one request's ratio is already a good estimate on a quiet CPU. Under competing load
    requests also scatter (time slices), so decisions use ``plan``: a request's expected latency scaled by the
    slowdown, plus the ``quantile`` of the last ``window`` requests' excess over that, which keeps that share of
    requests in budget. The excess is in milliseconds, not a ratio: a busy process that takes the core for a time
    slice delays a 15 ms request and a 60 ms one by about the same time, so the scatter of the fast point's ratios
    (up to 2.5x on this machine) overstated the larger points' cost and held the translator on its floor for a
    whole phase of competing load in which the larger points fitted.
    """

    quantile = 0.9
    window = 20

    def __init__(self, alpha: float = 0.5, history: int = 50, initial: float = 1.0) -> None:
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        if initial <= 0:
            raise ValueError(f"initial slowdown must be positive, got {initial}")
        self.alpha = alpha
        self._log = math.log(initial)
        self._lock = threading.Lock()
        self.recent: deque[tuple[float, float]] = deque(maxlen=history)  # (observed ms, expected ms)

    @property
    def value(self) -> float:
        return math.exp(self._log)

    def planning(self) -> tuple[float, float]:
        """(slowdown, excess ms) that ``plan`` applies: the larger of the average (quick to follow a change) and
        the recent median ratio (not moved by one lucky request), and the recent requests' excess over it at its
        ``quantile``. Computed once per decision and applied to every candidate."""
        with self._lock:
            recent = list(self.recent)[-self.window :]
        slowdown = self.value
        if len(recent) < 5:
            return slowdown, 0.0
        slowdown = max(slowdown, statistics.median(o / e for o, e in recent))
        excess = sorted(o - slowdown * e for o, e in recent)
        return slowdown, max(0.0, excess[min(len(excess) - 1, int(self.quantile * len(excess)))])

    def plan(self, expected_ms: float) -> float:
        """What to plan a request expected at ``expected_ms`` (as calibrated) to take now."""
        slowdown, excess = self.planning()
        return slowdown * expected_ms + excess

    def update(self, observed_ms: float, expected_ms: float) -> float:
        if observed_ms <= 0 or expected_ms <= 0:
            return self.value
        with self._lock:
            self._log += self.alpha * (math.log(observed_ms / expected_ms) - self._log)
            self.recent.append((observed_ms, expected_ms))
            return self.value
