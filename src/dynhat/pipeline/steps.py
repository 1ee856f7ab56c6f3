"""The pipeline's steps (``dynhat.pipeline``), one function each, run in order; each is reused when its output
exists."""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from dynhat.data.corpus import ParallelCorpus
from dynhat.data.fetch import fetch_multi30k, load_multi30k, shared_data_dir
from dynhat.inference.checkpoint import load_trained
from dynhat.inference.measure import pinned
from dynhat.inference.points import PointLibrary
from dynhat.io import atomic_write_text
from dynhat.latency.collect import CollectSettings, collect
from dynhat.latency.dataset import load_collection
from dynhat.latency.ensemble import EnsemblePredictor
from dynhat.latency.predictor import LatencyPredictor
from dynhat.pipeline.settings import PipelineSettings
from dynhat.recipes.scenario import scenario_experiment
from dynhat.runtime.report import write_experiment
from dynhat.runtime.scenario import Scenario, default_scenario_path
from dynhat.search.evolution import EvolutionSettings
from dynhat.search.operating_points import SearchSettings, constraints_between, search_operating_points
from dynhat.train.prepare import build_trainer
from dynhat.train.settings import TrainSettings


def default_train_settings() -> TrainSettings:
    with resources.as_file(resources.files("dynhat") / "configs" / "multi30k-cpu.yml") as path:
        return TrainSettings.from_yaml(path)


class _Steps:
    """Announces each step and keeps how long each took (a reused step takes seconds): the summary's ``minutes``."""

    names = ("data", "train", "latency", "search", "scenario", "summary")

    def __init__(self) -> None:
        self.start = self.mark = time.perf_counter()
        self.minutes: dict[str, float] = {}
        self.current: str | None = None

    def say(self, step: int, text: str) -> None:
        self._close()
        self.current = self.names[step - 1]
        print(f"[{step}/6] {text}", flush=True)

    def _close(self) -> None:
        now = time.perf_counter()
        if self.current is not None:
            self.minutes[self.current] = round((now - self.mark) / 60, 2)
        self.mark = now

    def total(self) -> dict[str, float]:
        self._close()
        return self.minutes | {"total": round((time.perf_counter() - self.start) / 60, 2)}


def run_pipeline(settings: PipelineSettings | None = None) -> dict[str, Any]:
    settings = settings or PipelineSettings()
    steps = _Steps()
    run = Path(settings.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    mirror = shared_data_dir() / "multi30k"
    steps.say(1, f"Multi30k ({'mirror ' + str(mirror) if mirror.is_dir() else 'download'})")
    root = fetch_multi30k(settings.cache_dir, mirror if mirror.is_dir() else None)
    valid, test = load_multi30k("val", root), load_multi30k("test_2016_flickr", root)
    train_settings = default_train_settings()
    checkpoint = _train(steps, settings, train_settings, run, root, valid)
    torch.set_num_threads(settings.threads)
    # measured on the last CPUs of the process, one per thread, as the collections in docs/latency.md were (held-out
    # error under 1 %); an unpinned run of this step, its thread free to migrate between cores, fitted to 13 %
    measuring_cpus = tuple(sorted(os.sched_getaffinity(0))[-settings.threads:])
    predictor, facts = _latency(steps, settings, train_settings, run, measuring_cpus)
    model, vocab = load_trained(checkpoint)
    library, points_path = _search(steps, settings, run, (model, vocab, checkpoint), predictor, (valid, test),
                                   measuring_cpus)
    rows, table = _scenario(steps, settings, run, (model, vocab, library), valid, test)
    steps.say(6, f"summary ({run / 'summary.json'})")
    minutes = steps.total()  # of this invocation: a step reused from an earlier one takes seconds
    summary = {"run_dir": str(run), "checkpoint": str(checkpoint), "points": str(points_path), **facts,
               "scenario": [row for row in rows if row["phase"] == "overall"],
               "timeline": str(run / "scenario" / "timeline.png"), "minutes": minutes}
    atomic_write_text(run / "summary.json", json.dumps(summary, indent=1) + "\n")
    print(table)
    print(f"timeline: {run / 'scenario' / 'timeline.png'}")
    print("minutes: " + ", ".join(f"{k} {v:.1f}" for k, v in minutes.items()), flush=True)
    return summary


def _train(steps: _Steps, settings: PipelineSettings, train_settings: TrainSettings, run: Path, root: Path,
           valid: ParallelCorpus) -> Path:
    """Step 2: the SuperTransformer (given, or trained within the time budget; resumed); its checkpoint."""
    if settings.checkpoint is not None:
        steps.say(2, f"SuperTransformer: reusing {settings.checkpoint}")
        return Path(settings.checkpoint)
    # a schedule that completes within the budget (~26 updates a minute at 2 threads on this machine)
    updates = max(50, round(26 * settings.train_minutes))
    train_settings = replace(train_settings, max_minutes=settings.train_minutes, max_updates=updates,
                             warmup_updates=updates // 5, validate_every=max(25, updates // 4))
    steps.say(2, f"SuperTransformer on {train_settings.space}: {settings.train_minutes:g} min budget, {run}")
    trainer, _ = build_trainer(train_settings, run, load_multi30k("train", root), valid)
    if trainer.state.update < train_settings.max_updates and (
            trainer.state.elapsed_s < 60 * settings.train_minutes):
        trainer.train()
    print(f"      update {trainer.state.update}, {trainer.state.elapsed_s / 60:.1f} min trained", flush=True)
    return run / "checkpoint_best.pt"


def _latency(steps: _Steps, settings: PipelineSettings, train_settings: TrainSettings, run: Path,
             cpus: tuple[int, ...]) -> tuple[LatencyPredictor, dict[str, Any]]:
    """Step 3: this machine's latency dataset (resumed) and the predictor fitted on it; the summary's facts."""
    latency_csv = run / "latency.csv"
    steps.say(3, f"latency dataset of this machine: {settings.latency_configs} SubTransformers, {settings.threads} "
              f"thread(s), drift-probed -> {latency_csv}")
    with pinned(cpus, settings.threads):
        collect(CollectSettings(space=train_settings.space, configs=settings.latency_configs,
                                runs=settings.latency_runs, retries=settings.latency_retries,
                                threads=settings.threads, vocab_size=train_settings.vocab_size), latency_csv)
    collection = load_collection(latency_csv)
    predictor_path = run / "latency_predictor.pt"
    if predictor_path.exists():
        predictor = LatencyPredictor.load(predictor_path)
    else:
        predictor = EnsemblePredictor(metadata=collection.predictor_metadata()).fit(collection.table("hat"))
        predictor.save(predictor_path)
    test_metrics = predictor.metadata["test"]
    drift = collection.drifts[0].summary()
    print(f"      drift {drift['min']:.3f}..{drift['max']:.3f} (corrected); predictor held-out MAPE "
          f"{test_metrics['mape_pct']:.2f} %, RMSE {test_metrics['rmse_ms']:.2f} ms", flush=True)
    return predictor, {"latency_predictor_test": test_metrics, "drift": drift}


def _search(steps: _Steps, settings: PipelineSettings, run: Path, trained: tuple[Any, Any, Path],
            predictor: LatencyPredictor, data: tuple[ParallelCorpus, ParallelCorpus], cpus: tuple[int, ...]
            ) -> tuple[PointLibrary, Path]:
    """Step 4: the operating points (an NSGA-II front, one point per constraint, verified on ``cpus``)."""
    model, vocab, checkpoint = trained
    points_path = run / "operating_points.yml"
    if points_path.exists():
        library = PointLibrary.load(points_path, checkpoint=checkpoint, space=model.space)
        steps.say(4, f"operating points: reusing {points_path}")
    else:
        constraints = constraints_between(predictor, model.space, settings.constraints)
        steps.say(4, f"search: NSGA-II front, then one point per constraint {', '.join(f'{c:g}' for c in constraints)}"
                  " ms")
        evolution = EvolutionSettings.for_population(settings.population, iterations=settings.generations)
        # the fitness in one process per CPU; the on-device check where the latency dataset was measured
        search = SearchSettings(constraints, "pareto", settings.valid_sentences, evolution=evolution,
                                verify_runs=settings.latency_runs, test_sentences=settings.test_sentences,
                                variant_beams=settings.variant_beams, threads=settings.threads,
                                workers=len(os.sched_getaffinity(0)), measure_cpus=cpus)
        library = search_operating_points(model, vocab, checkpoint, predictor, *data, search).library
        library.save(points_path)
    served = {p.id for p in library.efficient()}
    for p in library.sorted():
        print(f"      {p.constraint_ms:>7.1f} ms: {p.id}  measured {p.measured_ms:.1f} ms, valid loss "
              f"{p.valid_loss:.3f}, BLEU {p.bleu}" + ("" if p.id in served else "  (not served: another point is "
                                                     "faster and better)"), flush=True)
    return library, points_path


def _scenario(steps: _Steps, settings: PipelineSettings, run: Path, served: tuple[Any, Any, PointLibrary],
              valid: ParallelCorpus, test: ParallelCorpus) -> tuple[list[dict[str, Any]], str]:
    """Step 5: the scenario, dynamic against every served point alone; its table's rows and markdown."""
    out = run / "scenario"
    if all((out / name).exists() for name in ("report.json", "table.md", "timeline.png")):
        steps.say(5, f"scenario: reusing {out / 'report.json'}")
        rows = json.loads((out / "report.json").read_text(encoding="utf-8"))["table"]
        return rows, (out / "table.md").read_text(encoding="utf-8").rstrip("\n")
    model, vocab, library = served
    scenario = Scenario.from_yaml(settings.scenario or default_scenario_path())
    steps.say(5, f"scenario: {len(scenario.phases)} phases, dynamic vs {len(library.efficient())} static points")
    _, experiment = scenario_experiment(model, vocab, library, scenario, test, valid)
    table = write_experiment(experiment, out)
    return experiment.table(), table
