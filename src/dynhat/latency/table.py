"""Latency tables in HAT's 10-feature CSV layout, read as they are, and HAT's 80/10/10 split.

Columns: HAT's 10 SubTransformer features (``dynhat.latency.features.HAT_FEATURES``), then
``latency_mean_encoder, latency_mean_decoder, latency_std_encoder, latency_std_decoder`` in milliseconds.
Every problem is a ``DataError`` naming the file, the line (the header is line 1) and the column.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from dynhat.errors import DataError
from dynhat.io import atomic_write_text, read_text
from dynhat.latency.features import HAT_FEATURES

LATENCY_COLUMNS = ("latency_mean_encoder", "latency_mean_decoder", "latency_std_encoder", "latency_std_decoder")
HAT_COLUMNS = HAT_FEATURES + LATENCY_COLUMNS
#: Fewest rows an 80/10/10 split accepts (one validation and one test row at least).
MIN_SPLIT_ROWS = 10
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)


@dataclass(frozen=True)
class Split:
    """Row indices of the train / validation / test parts."""

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray


def split_rows(n: int, seed: int, source: str = "") -> Split:
    """HAT's 80/10/10 train/valid/test split by a permutation seeded with ``seed`` (numpy PCG64)."""
    if n < MIN_SPLIT_ROWS:
        where = f"{source}: " if source else ""
        raise DataError(f"{where}{n} rows are too few for an 80/10/10 train/valid/test split "
                        f"(need at least {MIN_SPLIT_ROWS})")
    order = np.random.default_rng(seed).permutation(n)
    a, b = int(n * SPLIT_FRACTIONS[0]), int(n * (SPLIT_FRACTIONS[0] + SPLIT_FRACTIONS[1]))
    return Split(order[:a], order[a:b], order[b:])


@dataclass(frozen=True)
class LatencyTable:
    """Features ``[N, F]`` and per-row encoder/decoder latency means and stds (ms), in file (measurement) order."""

    features: np.ndarray
    encoder_ms: np.ndarray
    decoder_ms: np.ndarray
    encoder_std_ms: np.ndarray
    decoder_std_ms: np.ndarray
    source: str = ""
    feature_names: tuple[str, ...] = field(default=HAT_FEATURES)

    def __post_init__(self) -> None:
        n = len(self.encoder_ms)
        if self.features.ndim != 2 or self.features.shape != (n, len(self.feature_names)):
            raise DataError(f"{self.source or 'latency table'}: features have shape {self.features.shape}, "
                            f"expected ({n}, {len(self.feature_names)})")
        for name in ("decoder_ms", "encoder_std_ms", "decoder_std_ms"):
            if len(getattr(self, name)) != n:
                raise DataError(f"{self.source or 'latency table'}: {name} has {len(getattr(self, name))} rows, "
                                f"expected {n}")

    @property
    def total_ms(self) -> np.ndarray:
        """Encoder + decoder mean latency, the predictors' target."""
        return self.encoder_ms + self.decoder_ms

    def __len__(self) -> int:
        return len(self.encoder_ms)

    def split(self, seed: int) -> Split:
        return split_rows(len(self), seed, self.source)

    def subset(self, rows: np.ndarray) -> LatencyTable:
        return replace(self, features=self.features[rows], encoder_ms=self.encoder_ms[rows],
                       decoder_ms=self.decoder_ms[rows], encoder_std_ms=self.encoder_std_ms[rows],
                       decoder_std_ms=self.decoder_std_ms[rows])


def _check_header(path: Path, header: list[str]) -> None:
    found = [h.strip() for h in header]
    if tuple(found) == HAT_COLUMNS:
        return
    missing = [c for c in HAT_COLUMNS if c not in found]
    extra = [c for c in found if c not in HAT_COLUMNS]
    duplicated = sorted({c for c in found if found.count(c) > 1})
    problems = []
    if missing:
        problems.append(f"missing columns {missing}")
    if extra:
        problems.append(f"unexpected columns {extra}")
    if duplicated:
        problems.append(f"repeated columns {duplicated}")
    if not problems:
        problems.append("columns in the wrong order")
    raise DataError(f"{path}: line 1 (header): {'; '.join(problems)}; expected {list(HAT_COLUMNS)}, "
                    f"found {found}")


def read_hat_csv(path: str | Path) -> LatencyTable:
    """Read a latency CSV in HAT's layout (header + one row per SubTransformer) exactly as it is."""
    path = Path(path)
    text = read_text(path, encoding="utf-8-sig")
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        raise DataError(f"{path}: file is empty; expected a header with columns {list(HAT_COLUMNS)}")
    _check_header(path, header)
    rows: list[list[float]] = []
    for row in reader:
        line = reader.line_num
        if not row or all(not cell.strip() for cell in row):
            continue  # blank line
        where = f"{path}: line {line} (data row {len(rows) + 1})"
        if len(row) < len(HAT_COLUMNS):
            raise DataError(f"{where}: {len(row)} values, expected {len(HAT_COLUMNS)}; missing columns "
                            f"{list(HAT_COLUMNS[len(row):])}")
        if len(row) > len(HAT_COLUMNS):
            raise DataError(f"{where}: {len(row)} values, expected {len(HAT_COLUMNS)}; "
                            f"{len(row) - len(HAT_COLUMNS)} extra after column {HAT_COLUMNS[-1]!r}")
        values = []
        for column, cell in zip(HAT_COLUMNS, row, strict=True):
            try:
                value = float(cell)
            except ValueError:
                raise DataError(f"{where}, column {column}: {cell.strip()!r} is not a number") from None
            if not math.isfinite(value):
                raise DataError(f"{where}, column {column}: {cell.strip()!r} is not a finite number")
            if column in LATENCY_COLUMNS[:2] and value <= 0:
                raise DataError(f"{where}, column {column}: latency {value} ms is not positive")
            if column in LATENCY_COLUMNS[2:] and value < 0:
                raise DataError(f"{where}, column {column}: standard deviation {value} ms is negative")
            values.append(value)
        rows.append(values)
    if not rows:
        raise DataError(f"{path}: no data rows after the header")
    data = np.asarray(rows, dtype=np.float64)
    n = len(HAT_FEATURES)
    return LatencyTable(data[:, :n], data[:, n], data[:, n + 1], data[:, n + 2], data[:, n + 3], str(path))


def write_hat_csv(path: str | Path, table: LatencyTable) -> None:
    """Write ``table`` in HAT's layout, atomically; floats at full precision, so reading it back is exact."""
    if tuple(table.feature_names) != HAT_FEATURES:
        raise DataError(f"{path}: HAT's layout holds HAT's 10 features, not {list(table.feature_names)}")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HAT_COLUMNS)

    def fmt(value: float) -> str:
        return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else repr(float(value))

    for i in range(len(table)):
        writer.writerow([fmt(v) for v in table.features[i]]
                        + [repr(float(getattr(table, a)[i]))
                           for a in ("encoder_ms", "decoder_ms", "encoder_std_ms", "decoder_std_ms")])
    atomic_write_text(path, buffer.getvalue())
