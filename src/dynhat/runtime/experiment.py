"""The scenario experiment: a stream of test sentences through a scenario's phases, translated by the dynamic
translator and by every operating point as a static model, with the same budgets; per-phase and overall reports.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Sequence
from copy import deepcopy
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from dynhat.errors import ConfigError
from dynhat.inference.measure import pinned
from dynhat.runtime.controller import FixedPolicy
from dynhat.runtime.dynamic import DynamicTranslator, TranslationResult
from dynhat.runtime.load import background_load
from dynhat.runtime.scenario import Scenario
from dynhat.translate.bleu import sacrebleu_bleu


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
        with pinned(cpus, phase.threads or scenario.threads), background_load(phase.load, cpus):
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
                                 threads=translator.calibrated_threads, adapt_threads=False,
                                 backend=translator.backend)
        twin.length_ratios = list(length_ratios)
        return twin

    fixed_threads = copy(deepcopy(translator.policy))  # the policy as it was before the dynamic run
    with translator.backend.pinned(scenario.threads):
        budgets = phase_budgets(translator, scenario, sources)
        runs = {"dynamic": run_scenario(translator, scenario, sources, references, budgets, "dynamic", progress)}
        if static:
            runs[FIXED_THREADS] = run_scenario(fixed_threads, scenario, sources, references, budgets,
                                               FIXED_THREADS, progress)
            for i, point in enumerate(translator.points):
                runs[f"static {point.id}"] = run_scenario(copy(FixedPolicy(i)), scenario, sources, references,
                                                          budgets, f"static {i}", progress)
    return Experiment(runs)
