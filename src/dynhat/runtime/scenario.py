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

from dynhat import schema
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
        data = schema.mapping(read_yaml(path, "scenario"), source)
        schema.known_keys(data, ("phases", "threads", "budget_ms", "budget_factor", "seed"), source)
        if not isinstance(data.get("phases"), list) or not data["phases"]:
            raise ConfigError("expected a non-empty list of phases", source=source, field="phases")
        phases = tuple(_phase(item, f"{source}: phases[{i}]") for i, item in enumerate(data["phases"]))
        budget_ms = schema.number(data, "budget_ms", source, default=None, low=0, strict=True)
        return cls(phases, schema.integer(data, "threads", source, default=1, low=1), budget_ms,
                   schema.number(data, "budget_factor", source, default=1.0 if budget_ms is None else None, low=0,
                                 strict=True),
                   schema.integer(data, "seed", source, default=0, low=0))


def _phase(item: object, source: str) -> Phase:
    item = schema.mapping(item, source)
    schema.known_keys(item, ("name", "sentences", "cpus", "threads", "load", "budget_ms", "budget_factor"), source)
    return Phase(schema.text(item, "name", source), schema.integer(item, "sentences", source, low=1),
                 schema.integers(item, "cpus", source, low=0), schema.integer(item, "threads", source, default=None,
                                                                               low=1),
                 schema.integer(item, "load", source, default=0, low=0),
                 schema.number(item, "budget_ms", source, default=None, low=0, strict=True),
                 schema.number(item, "budget_factor", source, default=None, low=0, strict=True))


def default_scenario_path() -> Path:
    from importlib import resources as res

    return Path(str(res.files("dynhat") / "configs" / "scenario.yml"))
