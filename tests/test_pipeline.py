"""The main job end to end on the real Multi30k data, with budgets cut to seconds: every step runs, writes what
the README says, and a second call reuses every step instead of redoing it; by default on the shipped release,
with ``train`` on a SuperTransformer trained from scratch."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from helpers.toy_checkpoint import toy_checkpoint

import dynhat.pipeline.measure as measure
from dynhat.errors import DataError
from dynhat.inference import release
from dynhat.inference.points import PointLibrary
from dynhat.inference.release import export_checkpoint
from dynhat.latency.noise import check_noise
from dynhat.pipeline.settings import PipelineSettings
from dynhat.pipeline.steps import run_pipeline
from dynhat.pipeline.summary import serve_command

OUTPUTS = ("latency.csv", "latency_predictor.pt", "operating_points.yml", "scenario/report.json")


def _settings(tmp_path: Path, run: Path, **kwargs: object) -> PipelineSettings:
    """Every budget cut to seconds: 12 latency rows, 2 constraints, a 6-sentence scenario."""
    phases = tmp_path / "phases.yml"
    phases.write_text(yaml.safe_dump({"threads": 1, "budget_factor": 1.0, "phases": [
        {"name": "all cores", "sentences": 3}, {"name": "lower budget", "sentences": 3, "budget_factor": 0.5}]}))
    return PipelineSettings(run_dir=str(run), latency_configs=12, latency_runs=3, latency_retries=0, constraints=2,
                            population=6, generations=1, valid_sentences=8, bleu_sentences=8, scenario=str(phases),
                            cache_dir=str(tmp_path / "cache"), **kwargs)


@pytest.mark.shared_data
def test_the_main_job_runs_every_step_and_resumes(data_dir: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("DYNHAT_DATA", str(data_dir))
    run = tmp_path / "run"
    settings = _settings(tmp_path, run, train=True, train_minutes=0.05, paired="off", command="dynhat run --train")
    summary = run_pipeline(settings)
    for name in ("checkpoint_best.pt", "latency.csv", "latency_predictor.pt", "operating_points.yml",
                 "scenario/report.json", "scenario/table.md", "scenario/timeline.png", "summary.json"):
        assert (run / name).is_file(), name
    library = PointLibrary.load(run / "operating_points.yml", checkpoint=run / "checkpoint_best.pt")
    assert library.points and all(p.measured_ms and p.measured_ms > 0 and p.bleu is not None for p in library.points)
    assert library.bleu_set() == ("val", 8)  # the served points are chosen on validation sentences, not test
    assert library.commands == ["dynhat run --train"]  # the job's command line: how to make the library again
    assert json.loads((run / "summary.json").read_text()) == summary
    overall = {row["run"]: row for row in summary["scenario"]}
    searched = {p.config.id for p in library.points if p.beam == 4}
    assert searched and {p.config.id for p in library.points if p.beam == 1} == searched  # the greedy variants
    assert "dynamic" in overall and len(overall) == 2 + len(library.efficient())
    assert set(summary["minutes"]) == {"data", "model", "latency", "search", "scenario", "summary", "total"}
    assert summary["model"]["kind"] == "trained here" and summary["latency"]["noise"]["paired"] is False
    assert {row["point"] for row in summary["points"]} == {p.id for p in library.points}
    assert len(summary["targets"]) == 3 and all(isinstance(t["met"], bool) for t in summary["targets"])
    slowest = max(p.latency_ms for p in library.efficient())
    assert serve_command(summary) == (f"dynhat serve {run / 'checkpoint_best.pt'} --points "
                                      f"{run / 'operating_points.yml'} --budget-ms {math.ceil(slowest / 10) * 10}")

    stamps = {name: (run / name).stat().st_mtime_ns for name in ("checkpoint_best.pt", *OUTPUTS)}
    again = run_pipeline(settings)
    assert {name: (run / name).stat().st_mtime_ns for name in stamps} == stamps  # nothing redone
    assert again["scenario"] == summary["scenario"]

    export_checkpoint(run / "checkpoint_best.pt", tmp_path / "shipped" / "multi30k-en-de")
    monkeypatch.setattr(release, "releases_root", lambda: tmp_path / "shipped")
    with pytest.raises(DataError, match=r"holds the run of trained here .* pass another --run-dir"):
        run_pipeline(_settings(tmp_path, run))  # the shipped model now, but the run directory holds another's


@pytest.mark.shared_data
def test_by_default_the_main_job_serves_the_shipped_release(data_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """No training: the shipped release, its space's latency dataset (paired where the noise check says so, here
    forced by a zero threshold), and a second call that redoes nothing, not even the noise check."""
    monkeypatch.setenv("DYNHAT_DATA", str(data_dir))
    toy_checkpoint(tmp_path / "toy.pt")
    export_checkpoint(tmp_path / "toy.pt", tmp_path / "shipped" / "multi30k-en-de")
    monkeypatch.setattr(release, "releases_root", lambda: tmp_path / "shipped")
    checks = []

    def always_noisy(*args: object, **kwargs: object) -> object:
        checks.append(1)
        return check_noise(*args, **{**kwargs, "threshold_pct": 0.0})

    monkeypatch.setattr(measure, "check_noise", always_noisy)
    run = tmp_path / "run"
    summary = run_pipeline(_settings(tmp_path, run))
    assert summary["model"]["kind"] == "shipped release" and summary["model"]["source"].endswith("multi30k-en-de")
    assert not (run / "checkpoint_best.pt").exists() and summary["model"]["updates"] == 7
    assert summary["latency"]["noise"]["paired"] is True and summary["latency"]["rows"] == 12
    assert (run / "space.yml").is_file()  # the toy space is not a shipped one: the collection names this copy
    stamps = {name: (run / name).stat().st_mtime_ns for name in (*OUTPUTS, "latency_noise.json")}
    again = run_pipeline(_settings(tmp_path, run))
    assert {name: (run / name).stat().st_mtime_ns for name in stamps} == stamps and len(checks) == 1
    assert again["points"] == summary["points"] and again["targets"] == summary["targets"]
    export_checkpoint(tmp_path / "toy.pt", tmp_path / "shipped" / "multi30k-en-de", dtype="fp16")  # a new version
    with pytest.raises(DataError, match=r"whose files have changed since .* delete .* to run the job again"):
        run_pipeline(_settings(tmp_path, run))


def test_the_quality_target_says_how_much_switching_could_gain_at_most() -> None:
    from dynhat.inference.points import OperatingPoint
    from dynhat.pipeline.summary import targets
    from dynhat.space import largest, load_space, smallest

    space = load_space("multi30k-tiny-prenorm")
    library = PointLibrary([OperatingPoint(smallest(space), 50.0, 45.0, 5.0, 48.0),
                            OperatingPoint(largest(space), 300.0, 280.0, 4.0, 290.0)], space.name,
                           {"path": "x", "sha256": "0"}, {"cpu": "x"}, 1)
    rows = [{"run": "dynamic", "bleu": 38.5, "within_pct": 97.0},
            {"run": f"static {smallest(space).id}", "bleu": 37.5, "within_pct": 99.0},
            {"run": f"static {largest(space).id}", "bleu": 39.5, "within_pct": 60.0}]
    within, quality, span = targets(library, rows)
    assert within["met"] and span["met"] and span["measured"].startswith("6.0x")
    assert not quality["met"]
    assert quality["measured"].endswith(": +1.00, of at most +2.00 (the best point's BLEU above it)")
