"""Latency datasets measured on this machine, without the drift that HAT's tables carry.

HAT measured its 2,000 configurations in sampling order on a machine whose speed wandered during the run; about
half of its predictors' error is that drift (docs/latency.md). Here:

* the configurations are measured in random order (HAT's seeded uniform sampling, optionally reshuffled), so a
  slow spell never lines up with one part of the space;
* a fixed reference configuration is probed every ``probe_every`` measurements (and first and last), and each row
  is divided by the reference's relative speed at that moment (linear between the probes around it); with
  ``paired``, every timed run of a configuration follows one of the reference instead, each sample row is written
  with its own probe row right after it, and the row is divided by that probe alone: on a machine whose speed
  moves within seconds, probes minutes apart cannot follow it (docs/latency.md);
* every row is appended (flushed and fsynced) as soon as it is measured: a killed collection keeps all finished rows
  and resumes with the next configuration;
* a sidecar ``<csv>.json`` records the machine, thread count, space and protocol; appending to, or fitting on,
  rows from another machine, thread count or protocol is refused.

The CSV keeps the full configuration (HAT's YAML keys, as JSON) so that per-layer features can be computed; it can
be exported in HAT's 10-feature layout.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from dynhat import schema
from dynhat.errors import ConfigError, DataError
from dynhat.inference.measure import LatencyResult, machine_info, measure_latency, measure_paired_latency
from dynhat.io import atomic_write_text
from dynhat.latency.settings import CollectSettings
from dynhat.model.seq2seq import Seq2SeqModel
from dynhat.model.supertransformer import ModelSettings, SuperTransformer
from dynhat.space import DesignSpace, SubTransformerConfig, load_space
from dynhat.space.sampling import largest, middle, sample, smallest

FORMAT = "dynhat-latency-collection"
FORMAT_VERSION = 1
COLUMNS = ("row", "kind", "id", "encoder_ms", "decoder_ms", "encoder_std_ms", "decoder_std_ms", "elapsed_s",
           "config")
SAMPLE, PROBE = "sample", "probe"
#: Machine facts that must agree between rows that go into one fit.
MACHINE_KEYS = ("cpu", "logical_cores", "torch")


@dataclass(frozen=True)
class Row:
    row: int
    kind: str
    config: SubTransformerConfig
    encoder_ms: float
    decoder_ms: float
    encoder_std_ms: float
    decoder_std_ms: float
    elapsed_s: float

    @property
    def total_ms(self) -> float:
        return self.encoder_ms + self.decoder_ms

    def to_csv(self) -> list[str]:
        return [str(self.row), self.kind, self.config.id, f"{self.encoder_ms:.5f}", f"{self.decoder_ms:.5f}",
                f"{self.encoder_std_ms:.5f}", f"{self.decoder_std_ms:.5f}", f"{self.elapsed_s:.2f}",
                json.dumps(self.config.to_dict(), separators=(",", ":"))]


def reference_config(name: str, space: DesignSpace) -> SubTransformerConfig:
    picks = {"largest": largest, "smallest": smallest, "middle": middle}
    if name in picks:
        return picks[name](space)
    return SubTransformerConfig.from_yaml(name).validate(space, source=name)


def planned_configs(space: DesignSpace, count: int, seed: int, order_seed: int | None = None
                    ) -> list[SubTransformerConfig]:
    """The largest and smallest configurations, then distinct ones from HAT's uniform sampling with ``seed``.

    The two extremes make the data span the space's corners, which random samples almost never reach (all six
    encoder FFNs at the widest choice has probability 3^-6 here), so a predictor need not extrapolate to them.
    Sampling order is already random, and a larger ``count`` extends the same list (so a collection can grow).
    ``order_seed`` shuffles the measurement order, to measure the same configurations again in another order.
    """
    rng = random.Random(seed)
    chosen: dict[str, SubTransformerConfig] = {c.id: c for c in (largest(space), smallest(space))[:count]}
    attempts = 0
    while len(chosen) < count:
        config = sample(space, rng)
        chosen.setdefault(config.id, config)
        attempts += 1
        if attempts > 100 * count:
            raise ConfigError(f"the space {space.name!r} has fewer than {count} distinct configurations",
                              field="configs")
    order = list(chosen.values())
    if order_seed is not None:
        random.Random(order_seed).shuffle(order)
    return order


# ----------------------------------------------------------------------------------------------------- files
def sidecar_path(csv_path: str | Path) -> Path:
    return Path(f"{csv_path}.json")


def _sidecar(settings: CollectSettings) -> dict[str, Any]:
    machine = machine_info()
    return {"format": FORMAT, "version": FORMAT_VERSION, "protocol": settings.protocol(),
            "machine": {k: machine[k] for k in MACHINE_KEYS}}


def read_sidecar(csv_path: str | Path) -> dict[str, Any]:
    path = sidecar_path(csv_path)
    if not path.is_file():
        raise DataError(f"{path}: missing; a dynhat latency collection keeps its machine and protocol there")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: unreadable ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataError(f"{path}: not a dynhat latency collection sidecar (format {FORMAT!r} expected)")
    if meta.get("version") != FORMAT_VERSION:
        raise DataError(f"{path}: version {meta.get('version')}, this dynhat reads {FORMAT_VERSION}")
    protocol = schema.mapping(meta.get("protocol"), str(path), "protocol")
    machine = schema.mapping(meta.get("machine"), str(path), "machine")
    schema.text(protocol, "space", f"{path}: protocol")
    for key in ("runs", "threads", "src_len", "tgt_len", "beam", "vocab_size"):
        schema.integer(protocol, key, f"{path}: protocol", low=1)
    for key in MACHINE_KEYS:
        if key not in machine:
            raise ConfigError("missing", source=f"{path}: machine", field=key)
    return meta


def mismatch(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    out = []
    defaults = {"protocol": {"paired": False}, "machine": {}}  # keys that files of earlier versions lack
    for part in ("machine", "protocol"):
        for key in sorted(set(a[part]) | set(b[part])):
            if a[part].get(key, defaults[part].get(key)) != b[part].get(key, defaults[part].get(key)):
                out.append(f"{part}.{key}: {a[part].get(key)!r} vs {b[part].get(key)!r}")
    return out


def read_rows(csv_path: str | Path, space: DesignSpace | None = None) -> list[Row]:
    """The complete rows of a collection CSV; a torn last line (a kill mid-write) is ignored."""
    path = Path(csv_path)
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines = lines[:-1]
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None or tuple(header) != COLUMNS:
        raise DataError(f"{path}: line 1: header {header}, expected {list(COLUMNS)}")
    rows = []
    for number, values in enumerate(reader, start=2):
        if len(values) != len(COLUMNS):
            raise DataError(f"{path}: line {number}: {len(values)} columns, expected {len(COLUMNS)}")
        record = dict(zip(COLUMNS, values, strict=True))
        try:
            config = SubTransformerConfig.from_dict(json.loads(record["config"]), source=f"{path}:{number}")
            numbers = {k: float(record[k]) for k in COLUMNS[3:8]}
            index = int(record["row"])
        except (ValueError, json.JSONDecodeError) as err:
            raise DataError(f"{path}: line {number}: {err}") from None
        bad = [k for k, v in numbers.items()
               if not math.isfinite(v) or v < 0 or (v == 0 and k in ("encoder_ms", "decoder_ms"))]
        if bad:
            raise DataError(f"{path}: line {number}: column {bad[0]} is {record[bad[0]]!r}; latencies and times are "
                            "finite, latencies positive")
        if record["kind"] not in (SAMPLE, PROBE):
            raise DataError(f"{path}: line {number}: column kind is {record['kind']!r}, expected sample or probe")
        if space is not None:
            config.validate(space, source=f"{path}:{number}")
        rows.append(Row(index, record["kind"], config, **numbers))
    return rows


def _truncate_torn_tail(path: Path) -> None:
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as handle:
            handle.truncate(data.rfind(b"\n") + 1)


def _open(out: Path, settings: CollectSettings, space: DesignSpace) -> list[Row]:
    """The rows ``out`` already holds (its torn last line dropped), after checking they were measured under the
    same conditions; a new file gets its sidecar and header."""
    meta = _sidecar(settings)
    if not out.exists():
        atomic_write_text(sidecar_path(out), json.dumps(meta, indent=2) + "\n")
        atomic_write_text(out, ",".join(COLUMNS) + "\n")
        return []
    problems = mismatch(read_sidecar(out), meta)
    if problems:
        raise DataError(f"{out}: measured under other conditions, refusing to append ({'; '.join(problems)}); "
                        "write a new file")
    _truncate_torn_tail(out)
    return read_rows(out, space)


# ------------------------------------------------------------------------------------------------- collecting
def collect(settings: CollectSettings, out: str | Path, model: Seq2SeqModel | None = None,
            progress: bool = True) -> list[Row]:
    """Measure ``settings.configs`` SubTransformers (resuming ``out`` if it exists); returns every row."""
    out = Path(out)
    space = load_space(settings.space)
    rows = _open(out, settings, space)
    done = {r.config.id for r in rows if r.kind == SAMPLE}
    todo = [c for c in planned_configs(space, settings.configs, settings.seed, settings.order_seed)
            if c.id not in done]
    if model is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # the values of the weights do not change the latency
            model = SuperTransformer(space, ModelSettings(vocab_size=settings.vocab_size))
    reference = reference_config(settings.reference, space)
    since_probe = next((i for i, r in enumerate(reversed(rows)) if r.kind == PROBE), len(rows))
    start = time.perf_counter() - (rows[-1].elapsed_s if rows else 0.0)
    with out.open("a", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)

        def record(kind: str, config: SubTransformerConfig) -> None:
            if settings.paired:  # the sample and its probe in one write: both land or neither
                results = zip((SAMPLE, PROBE), (config, reference), measure_paired(model, config, reference,
                                                                                     settings), strict=True)
            else:
                results = [(kind, config, measure(model, config, settings))]
            elapsed = time.perf_counter() - start
            new = [Row(len(rows) + i, k, c, r.encoder_ms, r.decoder_ms, r.encoder_std_ms, r.decoder_std_ms, elapsed)
                   for i, (k, c, r) in enumerate(results)]
            writer.writerows(row.to_csv() for row in new)
            handle.flush()
            os.fsync(handle.fileno())
            rows.extend(new)

        if settings.paired:
            for config in tqdm(todo, desc="latency (paired)", unit="cfg", disable=not progress or not todo,
                               dynamic_ncols=True):
                record(SAMPLE, config)
            return read_rows(out, space)
        if todo and (not rows or since_probe > 0):
            record(PROBE, reference)
            since_probe = 0
        for config in tqdm(todo, desc="latency", unit="cfg", disable=not progress or not todo, dynamic_ncols=True):
            if since_probe >= settings.probe_every:
                record(PROBE, reference)
                since_probe = 0
            record(SAMPLE, config)
            since_probe += 1
        if since_probe > 0:
            record(PROBE, reference)
    return read_rows(out, space)  # as stored (rounded to the file's precision)


def spread(result: LatencyResult) -> float:
    """Relative spread of the kept runs: high when another process took the core during the measurement."""
    return (result.encoder_std_ms + result.decoder_std_ms) / result.total_ms


def measure(model: Seq2SeqModel, config: SubTransformerConfig, settings: CollectSettings) -> LatencyResult:
    """A disturbed measurement (spread over ``max_spread``) is taken again, up to ``retries`` times, and the
    fastest is kept: other processes only ever add time, and a uniformly slow measurement (a cold start, a
    sustained competitor) can look steady, so the lowest mean, not the lowest spread, is the least disturbed."""
    def once() -> LatencyResult:
        return measure_latency(model, config, src_len=settings.src_len, tgt_len=settings.tgt_len,
                               beam=settings.beam, runs=settings.runs, warmup=settings.warmup,
                               threads=settings.threads)

    best = result = once()
    for _ in range(settings.retries):
        if spread(result) <= settings.max_spread:
            break
        result = once()
        best = min(best, result, key=lambda r: r.total_ms)
    return best


def measure_paired(model: Seq2SeqModel, config: SubTransformerConfig, reference: SubTransformerConfig,
                   settings: CollectSettings) -> tuple[LatencyResult, LatencyResult]:
    """(config, reference), measured interleaved; no re-measurement: the reference's runs share the
    disturbances that retries were for."""
    return measure_paired_latency(model, config, reference, src_len=settings.src_len, tgt_len=settings.tgt_len,
                                  beam=settings.beam, runs=settings.runs, warmup=settings.warmup,
                                  threads=settings.threads)
