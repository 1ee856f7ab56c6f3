"""The pipeline's steps (``dynhat.pipeline``), one function each, run in order; each is reused when its output
exists, so a second call redoes nothing and only prints the summary again."""

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
from dynhat.errors import DataError
from dynhat.inference.checkpoint import load_checkpoint, load_trained
from dynhat.inference.points import PointLibrary
from dynhat.inference.release import is_release, release_dir, shipped_releases
from dynhat.io import atomic_write_text, file_sha256
from dynhat.latency.predictor import LatencyPredictor
from dynhat.pipeline.measure import latency_step
from dynhat.pipeline.settings import PipelineSettings
from dynhat.pipeline.summary import format_summary, point_rows, targets
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

    names = ("data", "model", "latency", "search", "scenario", "summary")

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
    """The main job (module docstring of ``dynhat.pipeline``); returns the summary it writes to summary.json."""
    settings = settings or PipelineSettings()
    steps = _Steps()
    run = Path(settings.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    mirror = shared_data_dir() / "multi30k"
    source = f"mirror {mirror}" if mirror.is_dir() else "download"
    steps.say(1, f"Multi30k ({source})")
    root = fetch_multi30k(settings.cache_dir, mirror if mirror.is_dir() else None)
    valid, test = load_multi30k("val", root), load_multi30k("test_2016_flickr", root)
    checkpoint, model_facts = _model(steps, settings, run, root, valid)
    model, vocab = load_trained(checkpoint)
    model_facts["space"] = model.space.name
    torch.set_num_threads(settings.threads)
    # measured on the last CPUs of the process, one per thread, as the collections in docs/latency.md were (held-out
    # error under 1 %); an unpinned run of this step, its thread free to migrate between cores, fitted to 13 %
    measuring_cpus = tuple(sorted(os.sched_getaffinity(0))[-settings.threads:])
    predictor, latency_facts = latency_step(settings, model, run, measuring_cpus, lambda text: steps.say(3, text))
    library, points_path = _search(steps, settings, run, (model, vocab, checkpoint), predictor, valid,
                                   measuring_cpus)
    rows, scenario = _scenario(steps, settings, run, (model, vocab, library), valid, test)
    steps.say(6, f"summary ({run / 'summary.json'})")
    overall_rows = [row for row in rows if row["phase"] == "overall"]
    data = {"source": source, "valid": len(valid.src), "fitness_sentences": settings.valid_sentences,
            "bleu_set": list(library.bleu_set()), "test_split": "test_2016_flickr", "test": len(test.src),
            "scenario_sentences": sum(p.sentences for p in scenario.phases)}
    summary = {"run_dir": str(run), "checkpoint": str(checkpoint), "points_file": str(points_path), "data": data,
               "threads": settings.threads,
               "model": model_facts, "latency": latency_facts, "points": point_rows(library, overall_rows),
               "scenario": overall_rows, "scenario_table": str(run / "scenario" / "table.md"),
               "targets": targets(library, overall_rows), "timeline": str(run / "scenario" / "timeline.png"),
               "minutes": steps.total()}  # of this invocation: a step reused from an earlier one takes seconds
    atomic_write_text(run / "summary.json", json.dumps(summary, indent=1) + "\n")
    print(format_summary(summary), flush=True)
    return summary


def _model(steps: _Steps, settings: PipelineSettings, run: Path, root: Path, valid: ParallelCorpus
           ) -> tuple[Path, dict[str, Any]]:
    """Step 2: the SuperTransformer (given, shipped or trained here) as a path, and what the summary says of it.
    A run directory serves one model: reusing it with another is refused (its points would be the other's)."""
    if settings.checkpoint is None and not settings.train and settings.release in shipped_releases():
        kind, path = "shipped release", release_dir(settings.release)
        steps.say(2, f"SuperTransformer: the shipped release {settings.release} ({path})")
    elif settings.checkpoint is not None:
        kind, path = "given", release_dir(settings.checkpoint) if is_release(settings.checkpoint) \
            else Path(settings.checkpoint)
        steps.say(2, f"SuperTransformer: reusing {settings.checkpoint}")
    else:
        kind, path = "trained here", _train(steps, settings, run, root, valid)
    facts = {"kind": kind, "source": str(path), "sha256": file_sha256(path)} | _training_facts(path)
    origin = {"kind": kind, "source": str(path)} | ({} if kind == "trained here" else {"sha256": facts["sha256"]})
    record = run / "model_source.json"
    if record.exists():
        earlier = json.loads(record.read_text(encoding="utf-8"))
        if earlier != origin:
            changed = (f"whose files have changed since (sha256 {earlier.get('sha256')} then, {facts['sha256']} now: "
                       "another dynhat version or a new export)" if earlier.get("source") == origin["source"]
                       else f"(sha256 {earlier.get('sha256', 'of its own training')}), not of {kind} {path}")
            raise DataError(f"{record}: {run} holds the run of {earlier.get('kind')} {earlier.get('source')} "
                            f"{changed}: pass another --run-dir, or delete {run} to run the job again")
    else:
        atomic_write_text(record, json.dumps(origin, indent=1) + "\n")
    return path, facts


def _training_facts(path: Path) -> dict[str, Any]:
    """Updates and hours of training, from a release's model.json or a checkpoint's state."""
    if path.is_dir():
        meta = json.loads((path / "model.json").read_text(encoding="utf-8"))
        return {k: meta.get(k) for k in ("name", "updates", "wall_hours", "cpu_hours", "dtype")}
    state = load_checkpoint(path).get("state", {})
    return {"updates": state.get("update"), "wall_hours": round(state.get("elapsed_s", 0.0) / 3600, 3)}


def _train(steps: _Steps, settings: PipelineSettings, run: Path, root: Path, valid: ParallelCorpus) -> Path:
    """The SuperTransformer of the CPU-scale space trained from scratch within the time budget (resumed)."""
    train_settings = default_train_settings()
    if settings.checkpoint is None and not settings.train:
        print(f"      no shipped release {settings.release!r} in this installation: training from scratch", flush=True)
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


def _search(steps: _Steps, settings: PipelineSettings, run: Path, trained: tuple[Any, Any, Path],
            predictor: LatencyPredictor, valid: ParallelCorpus, cpus: tuple[int, ...]
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
                                verify_runs=settings.latency_runs, bleu_sentences=settings.bleu_sentences,
                                variant_beams=settings.variant_beams, threads=settings.threads,
                                workers=len(os.sched_getaffinity(0)), measure_cpus=cpus)
        library = search_operating_points(model, vocab, checkpoint, predictor, valid, search).library.made_by(
            settings.command)
        library.save(points_path)
    served = {p.id for p in library.efficient()}
    for p in library.sorted():
        print(f"      {p.constraint_ms:>7.1f} ms: {p.id}  measured {p.measured_ms:.1f} ms, valid loss "
              f"{p.valid_loss:.3f}, BLEU {p.bleu}" + ("" if p.id in served else "  (not served: another point is "
                                                     "faster and better)"), flush=True)
    return library, points_path


def _scenario(steps: _Steps, settings: PipelineSettings, run: Path, served: tuple[Any, Any, PointLibrary],
              valid: ParallelCorpus, test: ParallelCorpus) -> tuple[list[dict[str, Any]], Scenario]:
    """Step 5: the scenario, dynamic against every served point alone; its table's rows, and the scenario."""
    out = run / "scenario"
    scenario = Scenario.from_yaml(settings.scenario or default_scenario_path())
    if all((out / name).exists() for name in ("report.json", "table.md", "timeline.png")):
        steps.say(5, f"scenario: reusing {out / 'report.json'}")
        return json.loads((out / "report.json").read_text(encoding="utf-8"))["table"], scenario
    model, vocab, library = served
    steps.say(5, f"scenario: {len(scenario.phases)} phases, dynamic vs {len(library.efficient())} static points")
    _, experiment = scenario_experiment(model, vocab, library, scenario, test, valid)
    write_experiment(experiment, out)
    return experiment.table(), scenario
