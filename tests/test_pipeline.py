"""The main job end to end on the real Multi30k data, with budgets cut to seconds: every step runs, writes what
the README says, and a second call reuses every step instead of redoing it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from dynhat.inference.points import PointLibrary
from dynhat.pipeline.settings import PipelineSettings
from dynhat.pipeline.steps import run_pipeline


@pytest.mark.shared_data
def test_the_main_job_runs_every_step_and_resumes(data_dir: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("DYNHAT_DATA", str(data_dir))
    phases = tmp_path / "phases.yml"
    phases.write_text(yaml.safe_dump({"threads": 1, "budget_factor": 1.0, "phases": [
        {"name": "all cores", "sentences": 3}, {"name": "lower budget", "sentences": 3, "budget_factor": 0.5}]}))
    run = tmp_path / "run"
    settings = PipelineSettings(run_dir=str(run), train_minutes=0.05, latency_configs=12, latency_runs=3,
                                latency_retries=0, constraints=2, population=6, generations=1, valid_sentences=8,
                                test_sentences=8, scenario=str(phases), cache_dir=str(tmp_path / "cache"))
    summary = run_pipeline(settings)
    for name in ("checkpoint_best.pt", "latency.csv", "latency_predictor.pt", "operating_points.yml",
                 "scenario/report.json", "scenario/table.md", "scenario/timeline.png", "summary.json"):
        assert (run / name).is_file(), name
    library = PointLibrary.load(run / "operating_points.yml", checkpoint=run / "checkpoint_best.pt")
    assert library.points and all(p.measured_ms and p.measured_ms > 0 and p.bleu is not None for p in library.points)
    assert json.loads((run / "summary.json").read_text()) == summary
    overall = {row["run"]: row for row in summary["scenario"]}
    searched = {p.config.id for p in library.points if p.beam == 4}
    assert searched and {p.config.id for p in library.points if p.beam == 1} == searched  # the greedy variants
    assert "dynamic" in overall and len(overall) == 2 + len(library.efficient())
    assert set(summary["minutes"]) == {"data", "train", "latency", "search", "scenario", "summary", "total"}

    stamps = {name: (run / name).stat().st_mtime_ns for name in ("checkpoint_best.pt", "latency.csv",
                                                                   "operating_points.yml", "scenario/report.json")}
    again = run_pipeline(settings)
    assert {name: (run / name).stat().st_mtime_ns for name in stamps} == stamps  # nothing redone
    assert again["scenario"] == summary["scenario"]
