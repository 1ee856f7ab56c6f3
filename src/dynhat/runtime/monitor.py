"""What the process can use now, and how much slower than predicted it actually runs.

The system figures (cores in the affinity set, cgroup CPU quota, load from other processes, clock) explain a
slowdown; the observed-against-expected latency ratio measures it, whatever its cause, so the controller decides
from the ratio and the system figures are reported beside it.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil
import torch


@dataclass(frozen=True)
class Resources:
    affinity_cpus: int
    quota_cpus: float | None  # cgroup v2 cpu.max (None: no limit or not readable)
    load_1m: float  # system run-queue length, all processes
    other_cpu_pct: float  # CPU used by other processes since the last reading, in % of one core
    cpu_mhz: float | None
    gpu: str | None
    torch_threads: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cgroup_quota_cpus(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return None if quota == "max" else int(quota) / int(period)


class ResourceMonitor:
    """Readings of the machine around this process; cheap enough to call per request (no sleeping)."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self._lock = threading.Lock()
        self._last = self._times()

    def _times(self) -> tuple[float, float, float]:
        total = psutil.cpu_times()
        busy = total.user + total.system + getattr(total, "nice", 0.0) + getattr(total, "irq", 0.0) + getattr(
            total, "softirq", 0.0)
        own = self._process.cpu_times()
        return busy, own.user + own.system, time.monotonic()

    def read(self) -> Resources:
        with self._lock:
            now = self._times()
            busy, own, wall = (b - a for a, b in zip(self._last, now, strict=True))
            self._last = now
        other = max(0.0, busy - own) / wall * 100 if wall > 0 else 0.0
        freq = psutil.cpu_freq()
        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        return Resources(len(os.sched_getaffinity(0)), cgroup_quota_cpus(), os.getloadavg()[0], round(other, 1),
                         freq.current if freq else None, gpu, torch.get_num_threads())


class SlowdownTracker:
    """Observed / expected latency, smoothed: 1.0 = as calibrated, 2.0 = twice as slow.

    An exponential moving average in log space (a 2x slowdown and a 2x speed-up weigh the same), reset towards a
    new level quickly because one request's ratio is already a good estimate on a quiet CPU.
    """

    def __init__(self, alpha: float = 0.5, history: int = 50) -> None:
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.alpha = alpha
        self._log = 0.0
        self._lock = threading.Lock()
        self.recent: deque[tuple[float, float]] = deque(maxlen=history)  # (observed ms, expected ms)

    @property
    def value(self) -> float:
        return math.exp(self._log)

    def update(self, observed_ms: float, expected_ms: float) -> float:
        if observed_ms <= 0 or expected_ms <= 0:
            return self.value
        with self._lock:
            self._log += self.alpha * (math.log(observed_ms / expected_ms) - self._log)
            self.recent.append((observed_ms, expected_ms))
            return self.value
