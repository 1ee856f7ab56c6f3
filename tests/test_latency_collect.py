"""Latency collection on this machine: rows, probes, resume after a kill, refusal to mix, drift correction."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers.toy_train import TOY_SPACE

from dynhat.errors import ConfigError, DataError
from dynhat.latency import collect as collect_module
from dynhat.latency.collect import (
    PROBE,
    SAMPLE,
    CollectSettings,
    Row,
    collect,
    planned_configs,
    read_rows,
)
from dynhat.latency.dataset import drift_of, load_collection
from dynhat.latency.ensemble import EnsemblePredictor
from dynhat.latency.features import layer_feature_names
from dynhat.model.supertransformer import ModelSettings, SuperTransformer
from dynhat.space import load_space
from dynhat.space.sampling import middle


@pytest.fixture
def toy_space(tmp_path: Path) -> str:
    path = tmp_path / "toy.yml"
    path.write_text(yaml.safe_dump(TOY_SPACE))
    return str(path)


def settings(space: str, **kw: object) -> CollectSettings:
    base = {"space": space, "configs": 9, "runs": 3, "warmup": 1, "src_len": 6, "tgt_len": 4, "beam": 2,
            "probe_every": 4, "vocab_size": 24}
    return CollectSettings(**(base | kw))  # type: ignore[arg-type]


def test_disturbed_rows_are_measured_again_and_the_fastest_kept(toy_space: str, monkeypatch) -> None:
    results = []

    def recorded(*args, **kwargs):  # the real measurement, counted
        results.append(real(*args, **kwargs))
        return results[-1]

    real = collect_module.measure_latency
    monkeypatch.setattr(collect_module, "measure_latency", recorded)
    space = load_space(toy_space)
    model = SuperTransformer(space, ModelSettings(vocab_size=24))
    steady = collect_module.measure(model, middle(space), settings(toy_space, runs=6, max_spread=10.0, retries=3))
    assert len(results) == 1 and steady is results[0]
    results.clear()
    kept = collect_module.measure(model, middle(space), settings(toy_space, runs=6, max_spread=1e-12, retries=3))
    assert len(results) == 4 and kept.total_ms == min(r.total_ms for r in results)
    with pytest.raises(ConfigError, match="max_spread"):
        settings(toy_space, max_spread=0)


def test_collection_measures_each_planned_config_once_between_probes(toy_space: str, tmp_path: Path) -> None:
    s = settings(toy_space)
    rows = collect(s, tmp_path / "lat.csv", progress=False)
    kinds = "".join("p" if r.kind == PROBE else "s" for r in rows)
    assert kinds == "pssssp" + "ssssp" + "sp"
    samples = [r.config.id for r in rows if r.kind == SAMPLE]
    assert samples == [c.id for c in planned_configs(load_space(toy_space), 9, 0)]
    assert {r.config.id for r in rows if r.kind == PROBE} == {middle(load_space(toy_space)).id}
    assert all(r.encoder_ms > 0 and r.decoder_ms > 0 for r in rows)
    again = read_rows(tmp_path / "lat.csv")
    assert [(r.row, r.kind, r.config, r.total_ms) for r in again] == [
        (r.row, r.kind, r.config, pytest.approx(r.total_ms, abs=1e-4)) for r in rows]


def test_growing_a_collection_keeps_its_rows_and_adds_the_rest(toy_space: str, tmp_path: Path) -> None:
    out = tmp_path / "lat.csv"
    first = collect(settings(toy_space, configs=4), out, progress=False)
    grown = collect(settings(toy_space, configs=9), out, progress=False)
    assert grown[: len(first)] == first
    ids = [r.config.id for r in grown if r.kind == SAMPLE]
    assert ids == [c.id for c in planned_configs(load_space(toy_space), 9, 0)]
    assert grown[-1].kind == PROBE


def test_a_torn_last_line_is_dropped_and_measured_again(toy_space: str, tmp_path: Path) -> None:
    out = tmp_path / "lat.csv"
    collect(settings(toy_space, configs=3), out, progress=False)
    text = out.read_text()
    out.write_text(text + '4,sample,e16d16L2-abc,1.0,2.0,0.1,0.1,9.9,"{""enc')  # killed mid-write
    rows = collect(settings(toy_space, configs=5), out, progress=False)
    assert [r.kind for r in rows].count(SAMPLE) == 5
    assert "abc" not in out.read_text()


def test_poisoned_latencies_are_refused_naming_the_line(toy_space: str, tmp_path: Path) -> None:
    out = tmp_path / "lat.csv"
    collect(settings(toy_space, configs=2), out, progress=False)
    lines = out.read_text().splitlines(keepends=True)
    fields = lines[2].split(",")
    for column, value in ((3, "nan"), (4, "-1.5"), (3, "0"), (7, "inf")):
        poisoned = fields.copy()
        poisoned[column] = value
        out.write_text("".join(lines[:2]) + ",".join(poisoned) + "".join(lines[3:]))
        with pytest.raises(DataError, match=rf"lat\.csv: line 3: column {COLUMNS_UNDER_TEST[column]} is "):
            read_rows(out)


COLUMNS_UNDER_TEST = {3: "encoder_ms", 4: "decoder_ms", 7: "elapsed_s"}


def test_a_killed_collection_resumes_without_measuring_rows_again(toy_space: str, tmp_path: Path) -> None:
    out = tmp_path / "lat.csv"
    args = [sys.executable, "-m", "dynhat", "latency", "collect", "--out", str(out), "--space", toy_space,
            "--configs", "40", "--runs", "40", "--src-len", "6", "--tgt-len", "4", "--beam", "2",
            "--vocab-size", "24", "--probe-every", "4"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and (not out.exists() or out.read_text().count("\n") < 6):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = read_rows(out)
    assert 5 <= len(before) < 50, "the collection should have been killed part-way"
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    after = read_rows(out)
    assert after[: len(before)] == before
    ids = [r.config.id for r in after if r.kind == SAMPLE]
    assert sorted(ids) == sorted(c.id for c in planned_configs(load_space(toy_space), 40, 0))
    assert [r.row for r in after] == list(range(len(after)))


def test_rows_from_other_conditions_are_refused(toy_space: str, tmp_path: Path) -> None:
    collect(settings(toy_space, configs=2), tmp_path / "a.csv", progress=False)
    with pytest.raises(DataError, match="threads: 1 vs 2"):
        collect(settings(toy_space, configs=3, threads=2), tmp_path / "a.csv", progress=False)
    collect(settings(toy_space, configs=2, beam=3), tmp_path / "b.csv", progress=False)
    with pytest.raises(DataError, match=r"b\.csv.*refusing to mix.*beam: 2 vs 3"):
        load_collection([tmp_path / "a.csv", tmp_path / "b.csv"])


def _row(i: int, kind: str, ms: float, config: object) -> Row:
    return Row(i, kind, config, ms / 2, ms / 2, 0.0, 0.0, float(i))  # type: ignore[arg-type]


def test_drift_correction_divides_by_the_reference_speed_between_probes(toy_space: str) -> None:
    ref = middle(load_space(toy_space))
    # the machine slows down by 1.5x between rows 0 and 4, then stays there
    rows = [_row(0, PROBE, 10.0, ref), _row(1, SAMPLE, 6.0, ref), _row(2, SAMPLE, 7.5, ref),
            _row(3, SAMPLE, 9.0, ref), _row(4, PROBE, 15.0, ref), _row(5, SAMPLE, 9.0, ref),
            _row(6, PROBE, 15.0, ref)]
    drift = drift_of(rows)
    assert drift.reference_ms == 15.0
    np.testing.assert_allclose(drift.factor(np.array([1.0, 2.0, 3.0, 5.0])) * 15.0, [11.25, 12.5, 13.75, 15.0])
    corrected = np.array([6.0, 7.5, 9.0, 9.0]) / drift.factor(np.array([1.0, 2.0, 3.0, 5.0]))
    np.testing.assert_allclose(corrected, [8.0, 9.0, 9.818181, 9.0], rtol=1e-5)
    assert drift.summary()["spread_pct"] == pytest.approx(100 * (1 - 10 / 15))
    spike = [_row(0, PROBE, 10.0, ref), _row(1, SAMPLE, 9.0, ref), _row(2, PROBE, 30.0, ref),
             _row(3, SAMPLE, 9.0, ref), _row(4, PROBE, 10.0, ref), _row(5, PROBE, 10.0, ref)]
    np.testing.assert_allclose(drift_of(spike).probe_factors, 1.0)  # one disturbed probe is not drift
    with pytest.raises(DataError, match="no reference probes"):
        drift_of([r for r in rows if r.kind == SAMPLE])



def test_a_paired_collection_corrects_each_row_by_its_own_reference_runs(toy_space: str, tmp_path: Path) -> None:
    out = tmp_path / "paired.csv"
    collect(settings(toy_space, configs=4, paired=True), out, progress=False)
    rows = read_rows(out)
    assert [r.kind for r in rows] == [SAMPLE, PROBE] * 4  # every sample with its own probe, no periodic ones
    ref = middle(load_space(toy_space))
    assert all(r.config == ref for r in rows[1::2])
    collection = load_collection(out)
    probes = np.array([r.total_ms for r in rows[1::2]])
    np.testing.assert_allclose(collection.corrections, probes / np.median(probes), rtol=1e-9)
    collect(settings(toy_space, configs=6, paired=True), out, progress=False)  # grows in pairs
    assert [r.kind for r in read_rows(out)] == [SAMPLE, PROBE] * 6
    with pytest.raises(DataError, match="paired: True vs False"):
        collect(settings(toy_space, configs=7), out, progress=False)
    # by hand: the machine 1.5x slower for the second pair, and the rows are corrected by it alone
    pairs = [_row(0, SAMPLE, 6.0, ref), _row(1, PROBE, 10.0, ref), _row(2, SAMPLE, 9.0, ref),
             _row(3, PROBE, 15.0, ref), _row(4, SAMPLE, 8.0, ref), _row(5, PROBE, 10.0, ref)]
    drift = drift_of(pairs, paired=True)
    np.testing.assert_allclose(np.array([6.0, 9.0, 8.0]) / drift.factor(np.array([0.0, 2.0, 4.0])), [6.0, 6.0, 8.0])
    with pytest.raises(DataError, match=r"row 4\) has no probe"):
        drift_of(pairs[:5], "x.csv", paired=True)
    with pytest.raises(DataError, match="row 2 is a sample"):
        drift_of([pairs[0], pairs[2], pairs[1], pairs[3]], paired=True)


def test_a_collection_becomes_a_table_and_fits_a_predictor(toy_space: str, tmp_path: Path) -> None:
    collect(settings(toy_space, configs=60), tmp_path / "lat.csv", progress=False)
    collection = load_collection(tmp_path / "lat.csv")
    table = collection.table("layer")
    assert table.features.shape == (60, len(layer_feature_names(load_space(toy_space))))
    raw = collection.table("layer", corrected=False)
    np.testing.assert_allclose(table.total_ms * collection.corrections, raw.total_ms)
    hat = collection.table("hat")
    assert hat.features.shape == (60, 10)
    collection.export_hat_csv(tmp_path / "hat.csv")
    assert (tmp_path / "hat.csv").read_text().startswith("encoder_embed_dim,")
    predictor = EnsemblePredictor(steps=50, members=2).fit(table)
    assert predictor.metadata["features"] == "layer"
    assert np.all(predictor.predict(table.features) > 0)


def test_the_noise_check_calls_a_machine_noisy_above_its_threshold() -> None:
    from dynhat.latency.noise import check_noise
    from dynhat.model import ModelSettings, SuperTransformer
    from dynhat.space import DesignSpace, middle

    space = DesignSpace.from_dict(TOY_SPACE)
    model = SuperTransformer(space, ModelSettings(vocab_size=24))
    strict = check_noise(model, middle(space), probes=3, runs=2, threshold_pct=0.0)
    assert strict.probes == 3 and strict.reference_ms > 0 and strict.cv_pct > 0 and strict.noisy
    assert strict.to_dict()["noisy"] is True and strict.spread_pct >= strict.cv_pct
    assert not check_noise(model, middle(space), probes=3, runs=2, threshold_pct=1e9).noisy
    with pytest.raises(ValueError, match="at least 3 probes"):
        check_noise(model, middle(space), probes=2)
