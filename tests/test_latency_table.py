from __future__ import annotations

import numpy as np
import pytest

from dynhat.errors import DataError
from dynhat.latency.features import HAT_FEATURES
from dynhat.latency.table import HAT_COLUMNS, LatencyTable, read_hat_csv, split_rows, write_hat_csv

HEADER = ",".join(HAT_COLUMNS)
GOOD = "640,6,1962.6666666666667,6.0,512,4,1920.0,2.5,5.5,1.5,5.495997965335846,124.5498161315918,0.0519,0.444"


def _table(n: int, seed: int = 0) -> LatencyTable:
    rng = np.random.default_rng(seed)
    feats = np.column_stack([
        rng.choice([512, 640], n), np.full(n, 6), rng.uniform(512, 3072, n), rng.uniform(2, 8, n),
        rng.choice([512, 640], n), rng.integers(1, 7, n), rng.uniform(512, 3072, n), rng.uniform(2, 8, n),
        rng.uniform(2, 8, n), rng.uniform(1, 3, n)])  # fmt: skip
    return LatencyTable(feats, rng.uniform(5, 10, n), rng.uniform(40, 400, n), rng.uniform(0, 1, n),
                        rng.uniform(0, 5, n), "synthetic")


def _write(tmp_path, body: str, name: str = "bad.csv"):
    path = tmp_path / name
    path.write_text(body)
    return path


def test_round_trip_is_exact(tmp_path) -> None:
    table = _table(30)
    write_hat_csv(tmp_path / "t.csv", table)
    again = read_hat_csv(tmp_path / "t.csv")
    for attr in ("features", "encoder_ms", "decoder_ms", "encoder_std_ms", "decoder_std_ms"):
        np.testing.assert_array_equal(getattr(again, attr), getattr(table, attr))
    np.testing.assert_array_equal(again.total_ms, table.encoder_ms + table.decoder_ms)
    assert again.feature_names == HAT_FEATURES and again.source == str(tmp_path / "t.csv")
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left no temp file


def test_reads_hat_rows_as_they_are(tmp_path) -> None:
    table = read_hat_csv(_write(tmp_path, f"{HEADER}\n{GOOD}\n\n{GOOD}\n", "ok.csv"))  # a blank line is skipped
    assert len(table) == 2
    assert table.features[0, 2] == pytest.approx(1962.6666666666667)
    assert table.total_ms[0] == pytest.approx(5.495997965335846 + 124.5498161315918)


@pytest.mark.parametrize(
    ("body", "pattern"),
    [
        ("", r"bad\.csv: file is empty"),
        (HEADER + "\n", r"bad\.csv: no data rows"),
        (HEADER.replace(",latency_std_decoder", "") + "\n",
         r"bad\.csv: line 1 \(header\): missing columns \['latency_std_decoder'\]; expected \[.*\], found \[.*\]"),
        (HEADER + ",extra\n", r"bad\.csv: line 1 \(header\): unexpected columns \['extra'\]"),
        (HEADER.replace("encoder_embed_dim,encoder_layer_num", "encoder_layer_num,encoder_embed_dim") + "\n",
         r"line 1 \(header\): columns in the wrong order"),
        (f"{HEADER}\n{GOOD}\n{GOOD.rsplit(',', 1)[0]}\n",
         r"bad\.csv: line 3 \(data row 2\): 13 values, expected 14; missing columns \['latency_std_decoder'\]"),
        (f"{HEADER}\n{GOOD},7\n", r"bad\.csv: line 2 \(data row 1\): 15 values, expected 14; 1 extra"),
        (f"{HEADER}\n{GOOD}\n{GOOD}\n{GOOD.replace('1920.0', 'abc')}\n",
         r"bad\.csv: line 4 \(data row 3\), column decoder_ffn_embed_dim_avg: 'abc' is not a number"),
        (f"{HEADER}\n{GOOD.replace('5.495997965335846', 'nan')}\n",
         r"line 2 \(data row 1\), column latency_mean_encoder: 'nan' is not a finite number"),
        (f"{HEADER}\n{GOOD.replace('124.5498161315918', '0')}\n",
         r"column latency_mean_decoder: latency 0.0 ms is not positive"),
        (f"{HEADER}\n{GOOD.replace('0.0519', '-1')}\n",
         r"column latency_std_encoder: standard deviation -1.0 ms is negative"),
    ],
)
def test_errors_name_file_line_and_column(tmp_path, body: str, pattern: str) -> None:
    with pytest.raises(DataError, match=pattern):
        read_hat_csv(_write(tmp_path, body))


def test_missing_file(tmp_path) -> None:
    with pytest.raises(DataError, match=r"nope\.csv: file not found"):
        read_hat_csv(tmp_path / "nope.csv")


def test_too_few_rows_for_a_split_names_the_file(tmp_path) -> None:
    table = read_hat_csv(_write(tmp_path, f"{HEADER}\n" + f"{GOOD}\n" * 9, "small.csv"))
    with pytest.raises(DataError, match=r"small\.csv: 9 rows are too few for an 80/10/10 .*at least 10"):
        table.split(0)


@pytest.mark.parametrize("n", [10, 100, 2000])
def test_split_is_a_seeded_80_10_10_partition(n: int) -> None:
    s = split_rows(n, 3)
    assert (len(s.train), len(s.valid), len(s.test)) == (int(0.8 * n), int(0.9 * n) - int(0.8 * n),
                                                        n - int(0.9 * n))
    assert sorted(np.concatenate([s.train, s.valid, s.test]).tolist()) == list(range(n))
    again, other = split_rows(n, 3), split_rows(n, 4)
    np.testing.assert_array_equal(again.test, s.test)
    assert not np.array_equal(other.train, s.train)


def test_subset_and_shape_checks() -> None:
    table = _table(20)
    sub = table.subset(np.array([3, 1]))
    np.testing.assert_array_equal(sub.features, table.features[[3, 1]])
    with pytest.raises(DataError, match="features have shape"):
        LatencyTable(np.zeros((3, 9)), np.ones(3), np.ones(3), np.ones(3), np.ones(3), "x.csv")


@pytest.mark.shared_data
def test_reads_hat_published_tables(data_dir) -> None:
    for name in ("wmt14ende_cpu_raspberrypi_all", "wmt14ende_cpu_xeon_all", "wmt14ende_gpu_titanxp_all",
                 "iwslt14deen_gpu_titanxp_all"):
        path = data_dir / "hat" / "latency" / f"{name}.csv"
        assert path.read_text().splitlines()[0].split(",") == list(HAT_COLUMNS)  # 14 columns
        table = read_hat_csv(path)
        assert len(table) == 2000 and table.features.shape == (2000, 10)
        assert (table.features[:, 1] == 6).all() and set(np.unique(table.features[:, 5])) == {1, 2, 3, 4, 5, 6}
    xeon = read_hat_csv(data_dir / "hat" / "latency" / "wmt14ende_cpu_xeon_all.csv")
    assert xeon.total_ms.min() == pytest.approx(102.6, abs=0.1) and xeon.total_ms.max() == pytest.approx(486.6, abs=0.1)
