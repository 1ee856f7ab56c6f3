"""The scenario experiment as every caller runs it, and the targets it is judged by.

The translator is calibrated on validation sentences, never on the test stream it is then judged on, at the
scenario's thread count; the experiment runs it against every point served as a static model
(``dynhat.runtime.experiment``). The targets are what docs/runtime.md reports the experiment against.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from dynhat.data.corpus import ParallelCorpus
from dynhat.inference.measure import pinned
from dynhat.inference.points import PointLibrary
from dynhat.runtime.backends import DynhatBackend
from dynhat.runtime.costs import calibrate
from dynhat.runtime.dynamic import DynamicTranslator
from dynhat.runtime.experiment import Experiment, overall, run_experiment
from dynhat.runtime.scenario import Scenario
from dynhat.translate.interface import TextVocabulary

#: Validation sentences of the calibration: real lengths and output ratios, a few seconds per point.
CALIBRATION_SENTENCES = 16
#: Share of sentences within budget that counts as "always within budget".
RELIABLE_PCT = 95.0


class Target(NamedTuple):
    name: str
    measured: str
    met: bool


def calibrated_translator(model: Any, vocab: TextVocabulary, library: PointLibrary, scenario: Scenario,
                          calibration: Sequence[str], calibrate_runs: int = 10,
                          save_costs: str | Path | None = None) -> DynamicTranslator:
    """A translator for ``library``, calibrated at the scenario's thread count on ``calibration`` sentences; the
    cost model saved to ``save_costs`` when given (``CostModel.load``, ``dynhat serve --costs``)."""
    points = library.efficient()
    backend = DynhatBackend(model, vocab, points)  # every point prepared once, for calibration and serving
    with pinned(None, scenario.threads):
        costs = calibrate(model, vocab, points, scenario.threads, calibrate_runs,
                          list(calibration[:CALIBRATION_SENTENCES]), backend=backend)
    if save_costs is not None:
        costs.save(save_costs)
    return DynamicTranslator(model, vocab, library, 1000.0, costs=costs, backend=backend)


def scenario_experiment(model: Any, vocab: TextVocabulary, library: PointLibrary, scenario: Scenario,
                        test: ParallelCorpus, valid: ParallelCorpus, calibrate_runs: int = 10, static: bool = True,
                        save_costs: str | Path | None = None) -> tuple[DynamicTranslator, Experiment]:
    """Calibrate on ``valid`` (the cost model saved to ``save_costs`` when given), then run the scenario on
    ``test``: dynamic, and (``static``) every point alone."""
    translator = calibrated_translator(model, vocab, library, scenario, valid.src, calibrate_runs, save_costs)
    return translator, run_experiment(translator, scenario, test.src, test.tgt, static=static)


def best_static_label(translator: DynamicTranslator) -> str:
    """The run label of the point of best quality served alone."""
    return f"static {translator.points[translator.quality_rank.index(0)].id}"


def safe_static(statics: Mapping[str, Mapping[str, Any]]) -> tuple[str, bool]:
    """The static run the dynamic translator is judged against: of those within budget on >= 95 % of sentences,
    the best BLEU (True); when none is, the most reliable one (False), which it must also beat on that share."""
    always = [k for k, v in statics.items() if v["within_pct"] >= RELIABLE_PCT]
    if always:
        return max(always, key=lambda k: statics[k]["bleu"]), True
    return max(statics, key=lambda k: (statics[k]["within_pct"], statics[k]["bleu"])), False


def check_targets(experiment: Experiment, translator: DynamicTranslator) -> list[Target]:
    """The experiment against its targets: the dynamic translator within budget, better than any static point
    that is, while the best point alone is not; switches fast; adaptation within a few sentences."""
    totals = {label: overall(reports) for label, reports in experiment.runs.items()}
    dynamic = totals["dynamic"]
    statics = {k: v for k, v in totals.items() if k.startswith("static ")}
    best = statics[best_static_label(translator)]
    safe_label, always = safe_static(statics)
    safe = statics[safe_label]
    switch_p99 = dynamic["switch_p99_ms"]
    return [
        Target("dynamic within budget ≥ 95 % of sentences", f"{dynamic['within_pct']} %",
               dynamic["within_pct"] >= RELIABLE_PCT),
        Target("best static point (at full resources) below 60 %", f"{best['within_pct']} %",
               best["within_pct"] < 60),
        Target("dynamic BLEU above the best static point that is always (≥ 95 %) within budget"
               + ("" if always else "; none is, so the most reliable static point, which the dynamic translator "
                  "must also beat on within-budget share"),
               f"{dynamic['bleu']} vs {safe['bleu']} (`{safe_label.removeprefix('static ')}`, {safe['within_pct']} % "
               "within)",
               dynamic["bleu"] > safe["bleu"] and (bool(always) or dynamic["within_pct"] > safe["within_pct"])),
        Target("switch time p99 ≤ 1 ms", f"{switch_p99} ms" if switch_p99 is not None else "no switch",
               switch_p99 is not None and switch_p99 <= 1.0),
        Target("adaptation after a change within 3 sentences",
               f"{dynamic['max_adapt_sentences']} sentences (worst phase)", dynamic["max_adapt_sentences"] <= 3),
    ]
