from __future__ import annotations

import numpy as np
import pytest

from dynhat.errors import DataError
from dynhat.latency.predictor import EnsemblePredictor, HatPredictor, LatencyPredictor, metrics, split_rows
from dynhat.latency.table import COLUMNS, LatencyTable, hat_features, read_hat_csv, write_hat_csv
from dynhat.space import SubTransformerConfig

HEADER = ",".join(COLUMNS)


def _synthetic(n: int = 300, seed: int = 0) -> LatencyTable:
    """Latency that follows a known law of decoder depth and width, plus 1% noise."""
    rng = np.random.default_rng(seed)
    feats = np.column_stack([
        rng.choice([512, 640], n), np.full(n, 6), rng.uniform(1024, 3072, n), rng.uniform(4, 8, n),
        rng.choice([512, 640], n), rng.integers(1, 7, n), rng.uniform(1024, 3072, n), rng.uniform(4, 8, n),
        rng.uniform(4, 8, n), rng.uniform(1, 3, n)])  # fmt: skip
    dec = 20 + 30 * feats[:, 5] * feats[:, 4] / 512 * (1 + feats[:, 6] / 6144)
    dec *= 1 + 0.01 * rng.standard_normal(n)
    enc = 5 + feats[:, 2] / 1024
    return LatencyTable(feats, enc, dec, np.zeros(n), np.zeros(n), "synthetic")


def test_csv_round_trip(tmp_path) -> None:
    table = _synthetic(20)
    write_hat_csv(tmp_path / "t.csv", table)
    again = read_hat_csv(tmp_path / "t.csv")
    np.testing.assert_allclose(again.features, table.features)
    np.testing.assert_allclose(again.total_ms, table.total_ms)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("a,b\n1,2\n", r"header: missing columns \['encoder_embed_dim'"),
        (HEADER + "\n" + ",".join(["1"] * 13) + "\n", r"row 2: 13 values, expected 14"),
        (HEADER + "\n" + ",".join(["1"] * 13 + ["x"]) + "\n",
         r"row 2, column latency_std_decoder: 'x' is not a number"),
        (HEADER + "\n", "no data rows"),
        ("", "file is empty"),
    ],
)
def test_csv_errors_name_row_and_column(tmp_path, body, message) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(body)
    with pytest.raises(DataError, match=message):
        read_hat_csv(path)


def test_hat_features_by_hand() -> None:
    config = SubTransformerConfig(512, 6, (3072,) * 6, (4, 4, 8, 8, 8, 4), 512, 3, (3072,) * 3, (8, 8, 8),
                                  (4, 8, 8), (-1, 1, 1))
    assert hat_features(config) == [512, 6, 3072, 6.0, 512, 3, 3072, 8, 20 / 3, 5 / 3]


def test_split_and_metrics() -> None:
    s = split_rows(100, 3)
    assert (len(s.train), len(s.valid), len(s.test)) == (80, 10, 10)
    assert sorted(np.concatenate([s.train, s.valid, s.test]).tolist()) == list(range(100))
    m = metrics(np.array([110.0, 90.0]), np.array([100.0, 100.0]))
    assert (m.rmse_ms, m.mape_pct, m.max_abs_ms) == (10.0, 10.0, 10.0)
    with pytest.raises(DataError, match="too few"):
        split_rows(5, 0)


def test_predictors_learn_a_known_law_and_round_trip(tmp_path) -> None:
    table = _synthetic()
    s = split_rows(len(table), 0)
    ours = EnsemblePredictor(members=2, steps=600, metadata={"device": "synthetic"}).fit(
        table.features, table.total_ms, s.train, s.valid)
    m = metrics(ours.predict(table.features[s.test]), table.total_ms[s.test])
    assert m.mape_pct < 5
    mean, spread = ours.predict_with_std(table.features[:3])
    assert (spread >= 0).all() and mean.shape == (3,)
    hat = HatPredictor(steps=200, lr=1e-3).fit(table.features, table.total_ms, s.train)
    for predictor in (ours, hat):
        predictor.save(tmp_path / f"{predictor.method}.pt")
        loaded = LatencyPredictor.load(tmp_path / f"{predictor.method}.pt")
        np.testing.assert_allclose(loaded.predict(table.features[:5]), predictor.predict(table.features[:5]))
    assert LatencyPredictor.load(tmp_path / "ensemble.pt").metadata == {"device": "synthetic"}


@pytest.mark.shared_data
def test_reads_hat_published_tables(data_dir) -> None:
    for name in ("wmt14ende_cpu_raspberrypi_all", "wmt14ende_cpu_xeon_all", "wmt14ende_gpu_titanxp_all",
                 "iwslt14deen_gpu_titanxp_all"):
        table = read_hat_csv(data_dir / "hat" / "latency" / f"{name}.csv")
        assert len(table) == 2000 and table.features.shape == (2000, 10)
    xeon = read_hat_csv(data_dir / "hat" / "latency" / "wmt14ende_cpu_xeon_all.csv")
    assert xeon.total_ms.min() == pytest.approx(102.6, abs=0.1) and xeon.total_ms.max() == pytest.approx(486.6, abs=0.1)
