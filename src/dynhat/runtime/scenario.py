"""The scenario experiment: a stream of test sentences through phases in which this machine's resources really
change, translated by the dynamic translator and by every operating point as a static model.

Phases (YAML) set the translator's CPUs and thread count, start competing busy processes on those CPUs, and change
the budget. The budget is absolute (``budget_ms``) or relative to the best point's calibrated latency at full
resources for a long sentence of the stream (its 90th-percentile source length; ``budget_factor``), so one file
works on any machine and a factor of 1 is a budget the best point meets for about nine sentences in ten.
Background processes are always stopped, whatever happens.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import statistics
from collections.abc import Iterator, Sequence
from copy import deepcopy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from dynhat.errors import ConfigError
from dynhat.io import read_yaml
from dynhat.runtime.controller import Candidate
from dynhat.runtime.dynamic import DynamicTranslator, TranslationResult
from dynhat.translate.bleu import sacrebleu_bleu


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


# ------------------------------------------------------------------------------------------ background load
def _spin(cpus: Sequence[int] | None) -> None:  # pragma: no cover - runs in a child process
    if cpus:
        os.sched_setaffinity(0, set(cpus))
    x = 0
    while True:
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF


@contextlib.contextmanager
def background_load(count: int, cpus: Sequence[int] | None) -> Iterator[list[mp.Process]]:
    """``count`` busy processes pinned to ``cpus``; terminated (then killed) on exit, whatever happened."""
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_spin, args=(list(cpus) if cpus else None,), daemon=True) for _ in range(count)]
    try:
        for p in procs:
            p.start()
        yield procs
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join()


@contextlib.contextmanager
def resources(cpus: Sequence[int] | None, threads: int) -> Iterator[None]:
    old_cpus, old_threads = os.sched_getaffinity(0), torch.get_num_threads()
    try:
        if cpus is not None:
            os.sched_setaffinity(0, set(cpus))
        torch.set_num_threads(threads)
        yield
    finally:
        os.sched_setaffinity(0, old_cpus)
        torch.set_num_threads(old_threads)


# ------------------------------------------------------------------------------------------ running
class FixedPolicy:
    """Always the same point: an operating point used as a static model."""

    def __init__(self, index: int) -> None:
        self.index = index

    def choose(self, candidates: Sequence[Candidate], budget_ms: float, current: int | None) -> int:
        return self.index


@dataclass
class PhaseReport:
    name: str
    budget_ms: float
    results: list[TranslationResult]
    references: list[str]
    switch_ms: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        lat = [r.latency_ms for r in self.results]
        over = 0
        for r in self.results:  # sentences over budget before the first one within it
            if r.within_budget:
                break
            over += 1
        return {"phase": self.name, "budget_ms": round(self.budget_ms, 2), "sentences": len(lat),
                "within_pct": round(100 * sum(r.within_budget for r in self.results) / len(lat), 1),
                "mean_ms": round(statistics.fmean(lat), 2),
                "p95_ms": round(sorted(lat)[max(0, round(0.95 * len(lat)) - 1)], 2),
                "bleu": round(sacrebleu_bleu([r.text for r in self.results], self.references)[0], 2),
                "switches": len(self.switch_ms), "adapt_sentences": over,
                "points": sorted({r.point for r in self.results}),
                "threads": sorted({r.threads for r in self.results})}


def reference_budget(translator: DynamicTranslator, factor: float, src_tokens: int) -> float:
    """``factor`` x the best point's calibrated latency for a ``src_tokens`` sentence at full resources."""
    best = translator.quality_rank.index(0)
    out = max(1, round(translator.length_ratios[best] * src_tokens))
    return factor * translator.full_resource_ms(best, src_tokens + 1, out + 1)


def phase_budgets(translator: DynamicTranslator, scenario: Scenario, sources: Sequence[str]) -> list[float]:
    """Each phase's budget in ms, fixed before any run so that every run faces the same budgets."""
    total = sum(p.sentences for p in scenario.phases)
    if total > len(sources):
        raise ConfigError(f"the phases need {total} sentences, the stream has {len(sources)}", field="sentences")
    lengths = sorted(len(translator.vocab.encode(s)) for s in sources[:total])
    long = lengths[round(0.9 * (len(lengths) - 1))]
    default = scenario.budget_ms or reference_budget(translator, scenario.budget_factor or 1.0, long)
    return [p.budget_ms if p.budget_ms is not None else
            reference_budget(translator, p.budget_factor, long) if p.budget_factor is not None else default
            for p in scenario.phases]


def run_scenario(translator: DynamicTranslator, scenario: Scenario, sources: Sequence[str],
                 references: Sequence[str], budgets: Sequence[float], label: str = "dynamic",
                 progress: bool = True) -> list[PhaseReport]:
    """Translate the stream phase by phase; the translator's policy decides (a ``FixedPolicy`` makes it static)."""
    total = sum(p.sentences for p in scenario.phases)
    base_cpus = tuple(sorted(os.sched_getaffinity(0)))
    reports = []
    pos = 0
    bar = tqdm(total=total, desc=f"scenario {label}", unit="sent", disable=not progress, dynamic_ncols=True)
    for phase, budget in zip(scenario.phases, budgets, strict=True):
        translator.set_budget(budget)
        cpus = phase.cpus or base_cpus
        first_switch = len(translator.switches)
        results = []
        with resources(cpus, phase.threads or scenario.threads), background_load(phase.load, cpus):
            translator.set_threads(phase.threads or scenario.threads)
            for sentence in sources[pos : pos + phase.sentences]:
                results.append(translator.translate_one(sentence))
                bar.update(1)
                bar.set_postfix(phase=phase.name, point=results[-1].point_index, ms=f"{results[-1].latency_ms:.0f}")
        switch_ms = [s.switch_ms for s in translator.switches[first_switch:]]
        reports.append(PhaseReport(phase.name, budget, results, list(references[pos : pos + phase.sentences]),
                                   switch_ms))
        pos += phase.sentences
    bar.close()
    return reports


def overall(reports: Sequence[PhaseReport]) -> dict[str, Any]:
    results = [r for rep in reports for r in rep.results]
    lat = [r.latency_ms for r in results]
    switches = sorted(s for rep in reports for s in rep.switch_ms)
    return {"sentences": len(results),
            "within_pct": round(100 * sum(r.within_budget for r in results) / len(results), 1),
            "mean_ms": round(statistics.fmean(lat), 2),
            "bleu": round(sacrebleu_bleu([r.text for r in results], [t for rep in reports
                                                                     for t in rep.references])[0], 2),
            "switches": len(switches),
            "switch_p99_ms": round(switches[max(0, round(0.99 * len(switches)) - 1)], 4) if switches else None,
            "max_adapt_sentences": max(rep.summary()["adapt_sentences"] for rep in reports)}


def plot_timeline(runs: dict[str, list[PhaseReport]], path: str | Path) -> None:
    """Latency per sentence against the budget, with the active point, for the dynamic run and the static ones."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dynhat.io import atomic_write

    dynamic = runs["dynamic"]
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(12, 7), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    for label, reports in runs.items():
        lat = [r.latency_ms for rep in reports for r in rep.results]
        style = {"lw": 1.6, "color": "black", "zorder": 3} if label == "dynamic" else {"lw": 0.8, "alpha": 0.6}
        ax.plot(range(len(lat)), lat, label=label, **style)
    budgets = [rep.budget_ms for rep in dynamic for _ in rep.results]
    ax.plot(range(len(budgets)), budgets, "r--", lw=1.5, label="budget")
    start = 0
    for i, rep in enumerate(dynamic):
        end = start + len(rep.results)
        if i % 2:
            ax.axvspan(start, end, color="0.92", zorder=0)
            ax2.axvspan(start, end, color="0.92", zorder=0)
        ax.text((start + end) / 2, 0.98, rep.name, transform=ax.get_xaxis_transform(), ha="center", va="top",
                fontsize=9)
        start = end
    ax.set_ylabel("latency per sentence (ms)")
    ax.set_yscale("log")
    ax.legend(fontsize=7, ncol=4, loc="lower right")
    points = [r.point_index for rep in dynamic for r in rep.results]
    ax2.step(range(len(points)), points, where="post", color="black", label="point")
    ax2.set_ylabel("active point\n(0 = fastest)")
    threads = ax2.twinx()
    threads.step(range(len(points)), [r.threads for rep in dynamic for r in rep.results], where="post", color="C3",
                 ls="--", label="threads")
    threads.set_ylabel("threads", color="C3")
    ax2.set_xlabel("sentence")
    fig.tight_layout()
    atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=110))
    plt.close(fig)


@dataclass
class Experiment:
    runs: dict[str, list[PhaseReport]]  # "dynamic" and "static <point id>"

    def table(self) -> list[dict[str, Any]]:
        """One row per run and phase, then per run overall."""
        rows = []
        for label, reports in self.runs.items():
            rows += [{"run": label} | rep.summary() for rep in reports]
            rows.append({"run": label, "phase": "overall"} | overall(reports))
        return rows


FIXED_THREADS = "dynamic, fixed threads"


def run_experiment(translator: DynamicTranslator, scenario: Scenario, sources: Sequence[str],
                   references: Sequence[str], static: bool = True, progress: bool = True) -> Experiment:
    """The dynamic translator; then (``static``) the same policy at the phases' thread counts (what switching
    points alone achieves) and each point alone at those thread counts, through the same phases and budgets."""

    length_ratios = list(translator.length_ratios)  # as calibrated, before the dynamic run learns from the stream

    def copy(policy: Any) -> DynamicTranslator:
        twin = DynamicTranslator(translator.model, translator.vocab, translator.library, translator.budget_ms,
                                 policy, costs=translator.costs_by_threads,
                                 threads=translator.calibrated_threads, adapt_threads=False)
        twin.length_ratios = list(length_ratios)
        return twin

    fixed_threads = copy(deepcopy(translator.policy))  # the policy as it was before the dynamic run
    with resources(None, scenario.threads):
        budgets = phase_budgets(translator, scenario, sources)
        runs = {"dynamic": run_scenario(translator, scenario, sources, references, budgets, "dynamic", progress)}
        if static:
            runs[FIXED_THREADS] = run_scenario(fixed_threads, scenario, sources, references, budgets,
                                               FIXED_THREADS, progress)
            for i, point in enumerate(translator.points):
                runs[f"static {point.id}"] = run_scenario(copy(FixedPolicy(i)), scenario, sources, references,
                                                          budgets, f"static {i}", progress)
    return Experiment(runs)


def default_scenario_path() -> Path:
    from importlib import resources as res

    return Path(str(res.files("dynhat") / "configs" / "scenario.yml"))


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    cols = ["run", "phase", "budget_ms", "within_pct", "mean_ms", "p95_ms", "bleu", "switches", "adapt_sentences",
            "threads"]
    lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    for row in rows:
        lines.append("| " + " | ".join("" if row.get(c) is None else str(row.get(c)) for c in cols) + " |")
    return "\n".join(lines)


def write_experiment(experiment: Experiment, out_dir: str | Path) -> str:
    """``report.json`` (every sentence), ``table.md`` and ``timeline.png`` in ``out_dir``; returns the table."""
    import json

    from dynhat.io import atomic_write_text

    out = Path(out_dir)
    rows = experiment.table()
    detail = {label: [{"phase": rep.name, "budget_ms": rep.budget_ms, "results": [r.to_dict() for r in rep.results],
                       "switch_ms": rep.switch_ms} for rep in reports] for label, reports in experiment.runs.items()}
    atomic_write_text(out / "report.json", json.dumps({"table": rows, "runs": detail}, indent=1) + "\n")
    table = markdown_table(rows)
    atomic_write_text(out / "table.md", table + "\n")
    plot_timeline(experiment.runs, out / "timeline.png")
    return table
