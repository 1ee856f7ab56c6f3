"""A latency dataset as the fits read it: one or more collections (``collect``) of one machine and protocol, each
sample row divided by the drift of its moment (the reference probes' relative speed around it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dynhat.errors import ConfigError, DataError
from dynhat.latency.collect import PROBE, SAMPLE, Row, mismatch, read_rows, read_sidecar, sidecar_path
from dynhat.latency.features import HAT_FEATURES, hat_features, layer_feature_names, layer_features
from dynhat.latency.predictor import device_from_name
from dynhat.latency.table import LatencyTable, read_hat_csv, write_hat_csv
from dynhat.space import DesignSpace, load_space


@dataclass(frozen=True)
class Drift:
    """The reference's speed over the collection, relative to its median (1.0 = typical, 1.1 = 10% slower)."""

    probe_rows: np.ndarray
    probe_factors: np.ndarray
    reference_ms: float

    def factor(self, row: int | np.ndarray) -> np.ndarray:
        return np.interp(row, self.probe_rows, self.probe_factors)

    def summary(self) -> dict[str, float]:
        f = self.probe_factors
        return {"probes": len(f), "reference_ms": self.reference_ms, "min": float(f.min()),
                "max": float(f.max()), "spread_pct": float(100 * (f.max() - f.min())),
                "cv_pct": float(100 * f.std() / f.mean())}


def drift_of(rows: Sequence[Row], source: str = "", paired: bool = False) -> Drift:
    """Probe latencies relative to their median, each the median of itself and its two neighbours.

    Drift is slow; a burst of other work that hits one probe is not, and must not be spread over the twenty rows
    around it. The running median of three removes a lone outlying probe and keeps any change that lasts two.
    A ``paired`` collection's probes are each their sample's own, measured at the same moments: each sample is
    corrected by its probe alone, unsmoothed.
    """
    probes = [r for r in rows if r.kind == PROBE]
    if not probes:
        raise DataError(f"{source or 'collection'}: no reference probes, so drift cannot be measured")
    totals = np.array([p.total_ms for p in probes])
    if paired:
        for i, r in enumerate(rows):
            if (r.kind == SAMPLE) != (i % 2 == 0):
                raise DataError(f"{source or 'collection'}: row {r.row} is a {r.kind}; a paired collection "
                                "alternates sample, probe")
        if len(rows) % 2:
            raise DataError(f"{source or 'collection'}: the last sample (row {rows[-1].row}) has no probe")
        reference = float(np.median(totals))
        return Drift(np.array([p.row - 1 for p in probes], dtype=np.float64), totals / reference, reference)
    if len(totals) >= 3:
        padded = np.concatenate([totals[:1], totals, totals[-1:]])
        totals = np.median(np.stack([padded[:-2], padded[1:-1], padded[2:]]), axis=0)
    reference = float(np.median(totals))
    return Drift(np.array([p.row for p in probes], dtype=np.float64), totals / reference, reference)


@dataclass
class Collection:
    """One or more collection CSVs from the same machine, threads and protocol."""

    rows: list[Row]
    meta: dict[str, Any]
    space: DesignSpace
    source: str
    drifts: list[Drift]
    corrections: np.ndarray  # per sample row: the drift factor it was divided by

    @property
    def samples(self) -> list[Row]:
        return [r for r in self.rows if r.kind == SAMPLE]

    def table(self, features: str = "layer", corrected: bool = True) -> LatencyTable:
        """Sample rows as a ``LatencyTable`` with per-layer (``layer``) or HAT's 10 (``hat``) features."""
        samples = self.samples
        if features == "layer":
            names = layer_feature_names(self.space)
            x = [layer_features(r.config, self.space, src_len=self.meta["protocol"]["src_len"],
                                tgt_len=self.meta["protocol"]["tgt_len"],
                                vocab=self.meta["protocol"]["vocab_size"]) for r in samples]
        elif features == "hat":
            names, x = HAT_FEATURES, [hat_features(r.config) for r in samples]
        else:
            raise ConfigError(f"unknown features {features!r}; expected layer or hat", field="features")
        scale = self.corrections if corrected else np.ones(len(samples))
        return LatencyTable(np.asarray(x, dtype=np.float64).reshape(len(samples), len(names)),
                            np.array([r.encoder_ms for r in samples]) / scale,
                            np.array([r.decoder_ms for r in samples]) / scale,
                            np.array([r.encoder_std_ms for r in samples]) / scale,
                            np.array([r.decoder_std_ms for r in samples]) / scale, self.source, tuple(names))

    def corrected_ms(self) -> dict[str, float]:
        """Drift-corrected total latency of each sampled configuration (by id; the mean if measured twice)."""
        values: dict[str, list[float]] = {}
        for row, factor in zip(self.samples, self.corrections, strict=True):
            values.setdefault(row.config.id, []).append(row.total_ms / factor)
        return {k: float(np.mean(v)) for k, v in values.items()}

    def predictor_metadata(self, corrected: bool = True) -> dict[str, Any]:
        """What a predictor fitted on this collection must carry: device, threads, space and protocol."""
        protocol = self.meta["protocol"]
        return {"device": self.meta["machine"]["cpu"], "threads": protocol["threads"], "space": protocol["space"],
                "drift_corrected": corrected, "protocol": protocol, "machine": self.meta["machine"]}

    def export_hat_csv(self, path: str | Path, corrected: bool = True) -> None:
        write_hat_csv(path, self.table("hat", corrected))


def load_collection(paths: str | Path | Sequence[str | Path]) -> Collection:
    """Read collection CSVs, refusing to mix machines, thread counts or protocols; drift-correct each file."""
    paths = [Path(paths)] if isinstance(paths, str | Path) else [Path(p) for p in paths]
    if not paths:
        raise DataError("no latency collection given")
    meta = read_sidecar(paths[0])
    space = load_space(meta["protocol"]["space"])
    rows: list[Row] = []
    drifts, corrections = [], []
    for path in paths:
        other = read_sidecar(path)
        problems = mismatch(meta, other)
        if problems:
            raise DataError(f"{path}: measured under other conditions than {paths[0]}, refusing to mix them in one "
                            f"fit ({'; '.join(problems)})")
        file_rows = read_rows(path, space)
        drift = drift_of(file_rows, str(path), bool(other["protocol"].get("paired", False)))
        drifts.append(drift)
        samples = [r for r in file_rows if r.kind == SAMPLE]
        corrections.append(drift.factor(np.array([r.row for r in samples], dtype=np.float64)))
        rows += file_rows
    return Collection(rows, meta, space, ",".join(str(p) for p in paths), drifts,
                      np.concatenate(corrections) if corrections else np.zeros(0))


def read_latency_table(paths: Sequence[str | Path], features: str = "layer", corrected: bool = True,
                       device: str | None = None, threads: int | None = None, space: str | None = None
                       ) -> tuple[LatencyTable, dict[str, Any]]:
    """A table to fit and its metadata (device, threads, space), from our collections (recognised by their
    sidecars, which carry the metadata) or from one CSV in HAT's layout (which carries none: ``device`` defaults
    to the one its file name names, ``threads`` and ``space`` are as given)."""
    if all(sidecar_path(p).exists() for p in paths):
        collection = load_collection(paths)
        metadata = collection.predictor_metadata(corrected=corrected)
        if device:
            metadata["device"] = device
        return collection.table(features, corrected=corrected), metadata
    if len(paths) > 1:
        raise DataError("tables in HAT's layout carry no machine or thread count, so they are fitted one at a time")
    device = device or device_from_name(str(paths[0])) or "unknown"
    return read_hat_csv(paths[0]), {"device": device, "threads": threads, "space": space}
