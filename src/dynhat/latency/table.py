"""Latency tables in HAT's 10-feature CSV layout (HAT's published files read as they are).

Columns: the SubTransformer's per-stack averages as HAT encodes them, then the encoder and decoder latency means
and standard deviations in milliseconds. Every problem names the file, the row and the column.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dynhat.errors import DataError
from dynhat.io import atomic_write_text
from dynhat.space.config import SubTransformerConfig
from dynhat.space.space import ARBITRARY_ATTENDED

FEATURES = (
    "encoder_embed_dim", "encoder_layer_num", "encoder_ffn_embed_dim_avg", "encoder_self_attention_heads_avg",
    "decoder_embed_dim", "decoder_layer_num", "decoder_ffn_embed_dim_avg", "decoder_self_attention_heads_avg",
    "decoder_ende_attention_heads_avg", "decoder_arbitrary_ende_attn_avg",
)  # fmt: skip
LATENCY = ("latency_mean_encoder", "latency_mean_decoder", "latency_std_encoder", "latency_std_decoder")
COLUMNS = FEATURES + LATENCY


def hat_features(config: SubTransformerConfig) -> list[float]:
    """HAT's 10 features: averages over active layers; arbitrary attention counted as attended layers (1-3)."""
    def avg(values: tuple[int, ...]) -> float:
        return sum(values) / len(values)

    return [
        config.encoder_embed_dim, config.encoder_layer_num, avg(config.encoder_ffn_embed_dim),
        avg(config.encoder_self_attention_heads), config.decoder_embed_dim, config.decoder_layer_num,
        avg(config.decoder_ffn_embed_dim), avg(config.decoder_self_attention_heads),
        avg(config.decoder_ende_attention_heads),
        avg(tuple(ARBITRARY_ATTENDED[a] for a in config.decoder_arbitrary_ende_attn)),
    ]


@dataclass(frozen=True)
class LatencyTable:
    features: np.ndarray  # [N, 10]
    encoder_ms: np.ndarray
    decoder_ms: np.ndarray
    encoder_std_ms: np.ndarray
    decoder_std_ms: np.ndarray
    source: str = ""

    @property
    def total_ms(self) -> np.ndarray:
        return self.encoder_ms + self.decoder_ms

    def __len__(self) -> int:
        return len(self.total_ms)


def read_hat_csv(path: str | Path) -> LatencyTable:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise DataError(f"{path}: file is empty; expected a header with columns {list(COLUMNS)}")
        if tuple(h.strip() for h in header) != COLUMNS:
            missing = [c for c in COLUMNS if c not in header]
            extra = [c for c in header if c not in COLUMNS]
            raise DataError(f"{path}: header: missing columns {missing}, unexpected columns {extra}; "
                            f"expected {list(COLUMNS)} in this order")
        rows = []
        for number, row in enumerate(reader, start=2):
            if len(row) != len(COLUMNS):
                raise DataError(f"{path}: row {number}: {len(row)} values, expected {len(COLUMNS)}")
            values = []
            for column, text in zip(COLUMNS, row, strict=True):
                try:
                    value = float(text)
                except ValueError:
                    raise DataError(f"{path}: row {number}, column {column}: {text!r} is not a number") from None
                if not math.isfinite(value):
                    raise DataError(f"{path}: row {number}, column {column}: {text!r} is not finite")
                values.append(value)
            rows.append(values)
    if not rows:
        raise DataError(f"{path}: no data rows")
    data = np.asarray(rows, dtype=np.float64)
    return LatencyTable(data[:, :10], data[:, 10], data[:, 11], data[:, 12], data[:, 13], str(path))


def write_hat_csv(path: str | Path, table: LatencyTable) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for i in range(len(table)):
        writer.writerow([*table.features[i].tolist(), table.encoder_ms[i], table.decoder_ms[i],
                         table.encoder_std_ms[i], table.decoder_std_ms[i]])
    atomic_write_text(path, buffer.getvalue())
