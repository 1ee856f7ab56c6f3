"""Runtime: policies, slowdown tracking, the dynamic translator (no mixed outputs, switching), scenarios."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest
from helpers.toy_runtime import sentences, toy_parts

from dynhat.errors import BudgetUnmeetable, ConfigError, DataError
from dynhat.runtime import (
    Candidate,
    CostModel,
    DynamicTranslator,
    FixedPolicy,
    GreedyPolicy,
    HysteresisPolicy,
    PointCost,
    SlowdownTracker,
    calibrate,
)
from dynhat.runtime.experiment import FIXED_THREADS, run_experiment
from dynhat.runtime.load import background_load
from dynhat.runtime.monitor import FreeCores
from dynhat.runtime.scenario import Phase, Scenario
from dynhat.translate.translator import Translator

COSTS = [PointCost(1.0, 1.0), PointCost(2.0, 2.0), PointCost(4.0, 4.0)]


def cands(*ms: float) -> list[Candidate]:  # slower points are better, as on a Pareto front
    return [Candidate(i, m, 10.0 - i) for i, m in enumerate(ms)]


def test_hysteresis_steps_down_at_once_and_up_only_after_a_streak() -> None:
    policy = HysteresisPolicy(margin=0.1, up_margin=0.3, up_after=3)
    assert policy.choose(cands(10, 20, 40), 50, None) == 2
    assert policy.choose(cands(10, 20, 60), 50, 2) == 1  # the current point no longer fits: down now
    assert policy.choose(cands(10, 20, 100), 50, 1) == 1
    up = [policy.choose(cands(10, 20, 35), 50, 1) for _ in range(3)]
    assert up == [1, 1, 2]  # 35 * 1.3 <= 50 three times in a row
    assert policy.choose(cands(100, 200, 400), 50, 2) == 0  # nothing fits: the fastest
    policy.choose(cands(10, 20, 35), 50, 1)
    policy.choose(cands(10, 20, 45), 50, 1)  # fits with margin but not with up_margin: the streak restarts
    assert [policy.choose(cands(10, 20, 35), 50, 0) for _ in range(3)] == [0, 0, 2]  # up from 0 only now


def test_a_long_sentence_steps_down_alone_while_the_conditions_keep_the_ceiling() -> None:
    policy = HysteresisPolicy(margin=0.1, up_margin=0.3, up_after=3)

    def sentence(scale: float) -> list[Candidate]:  # typical sentence: 10 / 20 / 35 ms; this one scale x that
        return [Candidate(i, m * scale, 10.0 - i, m) for i, m in enumerate((10, 20, 35))]

    assert policy.choose(sentence(1.0), 50, None) == 2
    assert policy.choose(sentence(2.0), 50, 2) == 1  # 70 ms would not fit: this sentence alone steps down
    assert policy.choose(sentence(1.0), 50, 1) == 2  # no streak needed: the conditions did not change
    assert policy.choose(sentence(6.0), 50, 2) == 0  # nothing at or below the ceiling fits: the fastest
    assert policy.ceiling == 2
    slow = [Candidate(i, m, 10.0 - i) for i, m in enumerate((10, 20, 60))]  # conditions: the best no longer fits
    assert policy.choose(slow, 50, 2) == 1 and policy.ceiling == 1
    assert policy.choose(sentence(0.5), 50, 1) == 1  # a short sentence does not lift the ceiling at once


def test_slowdown_tracker_follows_the_ratio() -> None:
    tracker = SlowdownTracker(alpha=0.5)
    for _ in range(12):
        tracker.update(30.0, 10.0)
    assert tracker.value == pytest.approx(3.0, rel=1e-3)
    for _ in range(12):
        tracker.update(10.0, 10.0)
    assert tracker.value == pytest.approx(1.0, rel=1e-3)


def test_budget_decides_the_point_and_results_match_offline_translation(tmp_path: Path) -> None:
    model, vocab, library = toy_parts(tmp_path)
    dyn = DynamicTranslator(model, vocab, library, 60_000.0, costs=COSTS)
    src = sentences(6)
    offline = {i: Translator(model, vocab, p.config).translate(src) for i, p in enumerate(dyn.points)}
    wide = dyn.translate(src)
    assert {r.point_index for r in wide} == {2} and [r.text for r in wide] == offline[2]
    tight = dyn.translate(src, budget_ms=1e-3)
    assert {r.point_index for r in tight} == {0} and [r.text for r in tight] == offline[0]
    assert not any(r.within_budget for r in tight)
    assert [s.to_point for s in dyn.switches] == [2, 0]
    assert all(s.switch_ms >= 0.0 for s in dyn.switches)  # recorded; its speed is a benchmark (scenario switch p99)
    with pytest.raises(ValueError, match="out of range"):
        dyn.set_budget(-1)
    calls = []
    encode = vocab.encode
    vocab.encode = lambda text: calls.append(text) or encode(text)  # type: ignore[method-assign]
    again = dyn.translate(src)  # (it climbs back to point 2 after a streak)
    assert [r.text for r in again] == [offline[r.point_index][i] for i, r in enumerate(again)]
    assert calls == src  # each request encoded once


def test_a_strict_request_no_point_can_serve_is_refused_before_any_work(tmp_path: Path) -> None:
    model, vocab, library = toy_parts(tmp_path)
    dyn = DynamicTranslator(model, vocab, library, 60_000.0, costs=COSTS)
    src = sentences(2)
    dyn.translate(src[:1])
    before = (dyn.current, len(dyn.recent), len(dyn.switches))
    with pytest.raises(BudgetUnmeetable, match=f"within 0.001 ms now: the best choice, {dyn.points[0].id}") as err:
        dyn.translate_one(src[1], budget_ms=1e-3, strict=True)
    assert err.value.expected_ms > err.value.budget_ms == 1e-3
    assert (dyn.current, len(dyn.recent), len(dyn.switches)) == before and dyn.status()["refused"] == 1
    late = dyn.translate_one(src[1], budget_ms=1e-3)  # not strict: answered late on the fastest point
    assert late.point_index == 0 and not late.within_budget
    assert dyn.translate_one(src[1], strict=True).within_budget  # a budget a point meets is served as always


def test_calibration_measures_every_point_once_and_the_cost_model_is_saved(tmp_path: Path) -> None:
    model, vocab, library = toy_parts(tmp_path)
    points = library.efficient()
    costs = calibrate(model, vocab, points, 1, runs=3)
    assert costs.threads == 1 and costs.points == [p.id for p in points]
    assert all(c.encoder_ms > 0 and c.decoder_ms > 0 for c in costs.by_threads[1])
    assert len({(c.overhead_ms, c.scale) for c in costs.by_threads[1]}) == 1  # what serving adds: one fit per beam
    assert costs.length_ratios == [1.2] * 3  # synthetic sentences teach nothing about real lengths
    costs.save(tmp_path / "costs.json")
    assert CostModel.load(tmp_path / "costs.json") == costs
    dyn = DynamicTranslator(model, vocab, library, 100.0, costs=CostModel.load(tmp_path / "costs.json"))
    status = dyn.status()
    assert status["budget_ms"] == 100.0 and len(status["points"]) == 3 and dyn.calibrated_threads == 1
    other = replace(library, points=library.points[:2])
    with pytest.raises(DataError, match="calibrated for"):
        DynamicTranslator(model, vocab, other, 100.0, costs=costs)
    (tmp_path / "bad.json").write_text('{"format": "dynhat-cost-model", "version": 1, "points": []}')
    with pytest.raises(DataError, match=r"bad\.json: malformed cost model"):
        CostModel.load(tmp_path / "bad.json")
    src = sentences(4)
    real = calibrate(model, vocab, points, 1, runs=2, sentences=src)
    src_total = sum(len(vocab.encode(x)) for x in src)
    # each point's own output length: a point that writes more is expected to take longer
    for ratio, p in zip(real.length_ratios, points, strict=True):
        hyps = Translator(model, vocab, p.config, beam=p.beam).hypotheses(src)
        assert ratio == pytest.approx(sum(len(h.tokens) for h in hyps) / src_total)
    short, long = (DynamicTranslator(model, vocab, library, 100.0, costs=real.by_threads, threads=1) for _ in range(2))
    long.length_ratios = [2 * r for r in short.length_ratios]
    assert all(long._calibrated_ms(1, i, 20) > short._calibrated_ms(1, i, 20) for i in range(3))
    # the translator starts from the calibrated ratios; traffic teaches only the point that served it
    learning = DynamicTranslator(model, vocab, library, 100.0, costs=real)
    before = list(learning.length_ratios)
    assert before == real.length_ratios
    served = learning.translate_one(src[0])
    assert [r != b for r, b in zip(learning.length_ratios, before, strict=True)].count(True) <= 1
    assert all(r == b for i, (r, b) in enumerate(zip(learning.length_ratios, before, strict=True))
               if i != served.point_index)


def test_serve_calibrates_and_saves_or_starts_from_a_saved_cost_model(tmp_path: Path, monkeypatch, capsys) -> None:
    import torch

    import dynhat.inference.checkpoint
    import dynhat.runtime.costs
    import dynhat.runtime.service
    from dynhat.cli import main
    from dynhat.inference.points import PointLibrary

    model, vocab, library = toy_parts(tmp_path)
    served: list[DynamicTranslator] = []
    monkeypatch.setattr(dynhat.inference.checkpoint, "load_trained", lambda _path: (model, vocab))
    monkeypatch.setattr(PointLibrary, "load", classmethod(lambda _cls, *_a, **_k: library))
    monkeypatch.setattr(dynhat.runtime.service, "serve", lambda translator, *_a: served.append(translator))
    command = ["serve", "toy.pt", "--points", "points.yml", "--budget-ms", "100", "--calibrate-runs", "2"]
    saved = tmp_path / "costs.json"
    threads = torch.get_num_threads()
    assert main([*command, "--save-costs", str(saved)]) == 0
    assert served[-1].costs_by_threads == CostModel.load(saved).by_threads
    announced = capsys.readouterr().err  # which points it serves, before it listens
    listed = ", ".join(f"{p.id} ({p.latency_ms:.0f} ms where searched)" for p in served[-1].points)
    assert announced == f"dynhat serve: {len(served[-1].points)} points of points.yml: {listed}\n"
    monkeypatch.setattr(dynhat.runtime.costs, "calibrate", lambda *_a, **_k: pytest.fail("calibrated"))
    assert main([*command, "--costs", str(saved)]) == 0  # starts from the saved model, measuring nothing
    assert served[-1].costs_by_threads == CostModel.load(saved).by_threads and len(served) == 2
    capsys.readouterr()
    assert main([*command, "--costs", str(saved), "--threads", "2"]) == 2  # calibrated for 1 thread only
    err = capsys.readouterr().err
    assert "costs.json: costs at 2 thread(s)" in err and err.count("\n") == 1
    with pytest.raises(SystemExit):
        main([*command, "--costs", str(saved), "--save-costs", str(saved)])
    assert torch.get_num_threads() == threads  # the command restores what it set


def test_decoding_variants_are_served_at_their_own_beam_and_ranked_below_their_parent(tmp_path: Path) -> None:
    model, vocab, library = toy_parts(tmp_path)
    small, _, large = library.points
    # the large SubTransformer's greedy variant: faster than the middle one at beam 4, better than it
    variants = [replace(small, predicted_ms=None, measured_ms=0.5, beam=1),
                replace(large, predicted_ms=None, measured_ms=1.5, beam=1)]
    library = replace(library, points=[*library.points, *variants])
    dyn = DynamicTranslator(model, vocab, library, 60_000.0,
                            costs=calibrate(model, vocab, library.efficient(), 1, runs=2, sentences=sentences(4)))
    # the middle SubTransformer is dropped: the large one's greedy variant is faster and better
    assert [(p.config, p.beam) for p in dyn.points] == [(small.config, 1), (small.config, 4), (large.config, 1),
                                                        (large.config, 4)]
    assert dyn.quality_rank == [3, 2, 1, 0]  # same loss: the wider beam ranks first
    # what serving adds is fitted per beam: the greedy points share one fit, the beam-4 points another
    fits = [(c.overhead_ms, c.scale) for c in dyn.costs]
    assert fits[0] == fits[2] and fits[1] == fits[3]
    src = sentences(5)
    for i, p in enumerate(dyn.points):
        fixed = DynamicTranslator(model, vocab, library, 60_000.0, FixedPolicy(i), costs=dyn.costs_by_threads)
        results = fixed.translate(src)
        assert {r.point for r in results} == {p.id}
        assert [r.text for r in results] == Translator(model, vocab, p.config, beam=p.beam).translate(src)
    assert {r.point for r in dyn.translate(src)} == {large.id}  # the best point: beam 4
    assert [s["beam"] for s in dyn.status()["points"]] == [1, 4, 1, 4]


def test_concurrent_requests_during_budget_changes_never_mix_points(tmp_path: Path) -> None:
    model, vocab, library = toy_parts(tmp_path)
    dyn = DynamicTranslator(model, vocab, library, 60_000.0, GreedyPolicy(), costs=COSTS)
    src = sentences(8, seed=1)
    offline = {i: dict(zip(src, Translator(model, vocab, p.config).translate(src), strict=True))
               for i, p in enumerate(dyn.points)}
    results, stop = [], threading.Event()

    def flip() -> None:
        while not stop.is_set():
            for b in (1e-3, 60_000.0, 0.05):
                dyn.set_budget(b)
                time.sleep(0.001)

    def work(k: int) -> None:
        for s in src[k:] + src[:k]:
            results.append((s, dyn.translate_one(s)))

    flipper = threading.Thread(target=flip)
    flipper.start()
    workers = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    stop.set()
    flipper.join()
    assert len(results) == 32
    assert len({r.point_index for _, r in results}) >= 2
    for s, r in results:
        assert r.text == offline[r.point_index][s]


def test_scenario_yaml_errors_name_the_phase(tmp_path: Path) -> None:
    bad = tmp_path / "s.yml"
    bad.write_text("phases:\n  - {name: a, sentences: 3}\n  - {name: b, sentences: 2, loud: 1}\n")
    with pytest.raises(ConfigError, match=r"phases\[1\].*unknown keys \['loud'\]"):
        Scenario.from_yaml(bad)
    bad.write_text("phases: []\n")
    with pytest.raises(ConfigError, match="non-empty list"):
        Scenario.from_yaml(bad)


def test_background_load_is_always_stopped() -> None:
    with pytest.raises(RuntimeError), background_load(2, None) as procs:
        pids = [p.pid for p in procs]
        time.sleep(0.2)
        assert all(psutil.pid_exists(pid) for pid in pids)
        raise RuntimeError("a phase failed")
    assert not any(p.is_alive() for p in procs)


def test_scenario_runs_dynamic_and_static_with_the_same_budgets(tmp_path: Path) -> None:
    model, vocab, library = toy_parts(tmp_path)
    dyn = DynamicTranslator(model, vocab, library, 1000.0, costs=COSTS)
    scenario = Scenario((Phase("a", 4), Phase("b", 4, budget_ms=1e-3), Phase("c", 4, load=1)), threads=1,
                        budget_ms=60_000.0)
    src = sentences(12, seed=2)
    experiment = run_experiment(dyn, scenario, src, src, progress=False)
    assert set(experiment.runs) == {"dynamic", FIXED_THREADS} | {f"static {p.id}" for p in dyn.points}
    for reports in experiment.runs.values():
        assert [r.budget_ms for r in reports] == [60_000.0, 1e-3, 60_000.0]
    dynamic = experiment.runs["dynamic"]
    assert {r.point_index for r in dynamic[0].results} == {2}
    assert {r.point_index for r in dynamic[1].results} == {0}
    rows = experiment.table()
    assert {row["phase"] for row in rows} == {"a", "b", "c", "overall"}


def test_the_scenario_saves_the_cost_model_it_calibrated(tmp_path: Path) -> None:
    from dynhat.recipes.scenario import calibrated_translator

    model, vocab, library = toy_parts(tmp_path)
    scenario = Scenario((Phase("a", 4),), threads=1, budget_ms=60_000.0)
    dyn = calibrated_translator(model, vocab, library, scenario, sentences(4), calibrate_runs=2,
                                save_costs=tmp_path / "costs.json")
    saved = CostModel.load(tmp_path / "costs.json")
    assert saved.by_threads == dyn.costs_by_threads and saved.length_ratios == dyn.length_ratios
    assert saved.points == [p.id for p in dyn.points]

def test_free_cores_sees_a_busy_process_on_this_processs_cpu() -> None:
    before = os.sched_getaffinity(0)
    usage = psutil.cpu_percent(interval=0.3, percpu=True)
    cpu = min(before, key=lambda c: usage[c])  # the quietest of ours
    try:
        os.sched_setaffinity(0, {cpu})
        free = FreeCores(min_interval_s=0.1)
        time.sleep(0.6)
        quiet = free.read()
        if quiet < 0.6:
            pytest.skip(f"CPU {cpu} is already busy ({quiet:.2f} free)")
        with background_load(1, [cpu]):
            time.sleep(0.6)
            free.read()  # the window that saw the load start
            time.sleep(0.6)
            loaded = free.read()
    finally:
        os.sched_setaffinity(0, before)
    assert loaded < 0.4 < quiet - 0.2, (quiet, loaded)  # the busy process holds the one CPU


class Instant:
    """A point's translator that answers at once (the source back), so that a thread decision under test sees
    the costs and readings the test scripts, not how long torch takes on a busy machine."""

    def hypotheses_of(self, sources: list[list[int]]) -> list[SimpleNamespace]:
        return [SimpleNamespace(tokens=list(ids)) for ids in sources]


def instant(dyn: DynamicTranslator) -> DynamicTranslator:
    dyn.translators = [Instant() for _ in dyn.points]  # type: ignore[misc]
    return dyn


class Reading:
    """A settable free-core reading, to drive the thread decision through a script of machine states."""

    cpus = 2

    def __init__(self, value: float) -> None:
        self.value = value

    def read(self) -> float:
        return self.value


def test_threads_follow_the_free_cores_with_hysteresis_and_reset_the_slowdown(tmp_path: Path) -> None:
    model, vocab, library = toy_parts(tmp_path)
    # costs far above the toy's real time: every request runs faster than calibrated, so the trackers never make
    # the thread count that was used look worse than the other (that choice is the next test's)
    one = [PointCost(1e3 * c.encoder_ms, 1e3 * c.decoder_ms) for c in COSTS]
    two = [PointCost(c.encoder_ms / 2, c.decoder_ms / 2) for c in one]  # 2 threads twice as fast when free
    dyn = instant(DynamicTranslator(model, vocab, library, 60_000.0, costs={1: one, 2: two}, threads=2))
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 CPUs")
    reading = Reading(2.0)
    dyn.free_cores = reading  # type: ignore[assignment]
    src = sentences(3)
    assert {r.threads for r in dyn.translate(src)} == {2}
    dyn.slowdowns[2].update(15.0, 10.0)
    for free, threads in ((1.8, 2), (1.7, 1), (1.8, 1), (1.95, 2), (0.2, 1)):
        reading.value = free
        assert dyn.translate_one(src[0]).threads == threads, free
    # restarted when the machine changed, not the 1.5x learned before: at the fair share of 1 thread beside 1.8 busy
    # cores of 2, then moved by the one request since
    assert dyn.slowdowns[2].value == pytest.approx((1.8 + 2) / 2)
    assert dyn.slowdowns[1].value < (1.8 + 1) / 2
    dyn.set_threads(1)  # the cap wins over free cores
    reading.value = 2.0
    assert dyn.translate_one(src[0]).threads == 1
    with pytest.raises(ValueError, match=r"calibrated for 1\.\.2"):
        dyn.set_threads(3)
    fixed = DynamicTranslator(model, vocab, library, 60_000.0, costs={1: one, 2: two}, threads=2,
                              adapt_threads=False)
    fixed.free_cores = Reading(0.1)  # type: ignore[assignment]
    assert fixed.translate_one(src[0]).threads == 2


def test_a_thread_count_found_slower_than_calibrated_loses_to_the_other(tmp_path: Path) -> None:
    model, vocab, library = toy_parts(tmp_path)
    two = [PointCost(c.encoder_ms / 2, c.decoder_ms / 2) for c in COSTS]  # calibrated: 2 threads twice as fast
    dyn = DynamicTranslator(model, vocab, library, 60_000.0, costs={1: COSTS, 2: two}, threads=2)
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 CPUs")
    dyn.free_cores = Reading(2.0)  # type: ignore[assignment]
    tokens = len(sentences(1)[0].split())
    assert dyn.choose(tokens, dyn.budget_ms)[2] == 2  # the decision alone: no translation's timing in it
    for _ in range(3):
        dyn.slowdowns[2].update(30.0, 10.0)  # but two threads run 3x slower than calibrated: 1.5x one thread
    assert dyn.choose(tokens, dyn.budget_ms)[2] == 1


def test_the_plan_covers_the_recent_scatter_as_time_not_as_a_ratio() -> None:
    tracker = SlowdownTracker(alpha=0.5)
    for excess in [0, 0, 20, 0, 0, 0, 15, 0, 0, 0]:  # 10 ms requests, two delayed by a time slice
        tracker.update(10.0 + excess, 10.0)
    assert tracker.value < 1.5  # the average has settled back
    assert tracker.plan(10.0) == pytest.approx(30.0)  # the 90th percentile of the last ten excesses, 20 ms
    # a larger request: the same excess on top of the slowdown (the average, ~1.07 here), not 3 x 60
    assert tracker.plan(60.0) - tracker.plan(10.0) == pytest.approx(50 * tracker.value)
    assert tracker.plan(60.0) < 90.0
    slow = SlowdownTracker()
    for _ in range(10):
        slow.update(20.0, 10.0)  # a steady 2x slowdown (a lower clock) scales every request
    assert slow.plan(60.0) == pytest.approx(120.0)
    quiet = SlowdownTracker()
    for _ in range(10):
        quiet.update(10.0, 10.0)
    assert quiet.plan(40.0) == pytest.approx(40.0)
