"""A scenario: phases in which this machine's resources really change, and its YAML schema.

Phases (YAML) set the translator's CPUs and thread count, start competing busy processes on those CPUs, and change
the budget. The budget is absolute (``budget_ms``) or relative to the best point's calibrated latency at full
resources for a long sentence of the stream (its 90th-percentile source length; ``budget_factor``), so one file
works on any machine and a factor of 1 is a budget the best point meets for about nine sentences in ten. The
experiment that runs a scenario is ``dynhat.runtime.experiment``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dynhat.errors import ConfigError
from dynhat.io import read_yaml


@dataclass(frozen=True)
class Phase:
    name: str
    sentences: int
    cpus: tuple[int, ...] | None = None  # None: every CPU of the process at the start
    threads: int | None = None  # None: the scenario's threads
    load: int = 0  # competing busy processes, pinned to the phase's CPUs
    budget_ms: float | None = None  # None: the scenario's budget
    budget_factor: float | None = None


@dataclass(frozen=True)
class Scenario:
    phases: tuple[Phase, ...]
    threads: int = 1
    budget_ms: float | None = None
    budget_factor: float | None = 1.0
    seed: int = 0

    @classmethod
    def from_yaml(cls, path: str | Path) -> Scenario:
        source = str(path)
        data = read_yaml(path, "scenario")
        if not isinstance(data, dict) or not isinstance(data.get("phases"), list) or not data["phases"]:
            raise ConfigError("expected a mapping with a non-empty list 'phases'", source=source, field="phases")
        known = {"name", "sentences", "cpus", "threads", "load", "budget_ms", "budget_factor"}
        phases = []
        for i, item in enumerate(data["phases"]):
            where = f"phases[{i}]"
            if not isinstance(item, dict) or "name" not in item or "sentences" not in item:
                raise ConfigError("each phase needs a name and a number of sentences", source=source, field=where)
            unknown = set(item) - known
            if unknown:
                raise ConfigError(f"unknown keys {sorted(unknown)}; known: {sorted(known)}", source=source,
                                  field=where)
            try:
                phase = Phase(str(item["name"]), int(item["sentences"]),
                              tuple(int(c) for c in item["cpus"]) if item.get("cpus") is not None else None,
                              int(item["threads"]) if item.get("threads") is not None else None,
                              int(item.get("load", 0)),
                              float(item["budget_ms"]) if item.get("budget_ms") is not None else None,
                              float(item["budget_factor"]) if item.get("budget_factor") is not None else None)
            except (TypeError, ValueError) as err:
                raise ConfigError(f"bad value ({err})", source=source, field=where) from None
            if phase.sentences < 1 or phase.load < 0 or (phase.threads is not None and phase.threads < 1):
                raise ConfigError("sentences >= 1, load >= 0, threads >= 1", source=source, field=where)
            phases.append(phase)
        unknown = set(data) - {"phases", "threads", "budget_ms", "budget_factor", "seed"}
        if unknown:
            raise ConfigError(f"unknown keys {sorted(unknown)}", source=source)
        return cls(tuple(phases), int(data.get("threads", 1)), data.get("budget_ms"),
                   data.get("budget_factor", 1.0 if data.get("budget_ms") is None else None), int(data.get("seed", 0)))


def default_scenario_path() -> Path:
    from importlib import resources as res

    return Path(str(res.files("dynhat") / "configs" / "scenario.yml"))
