"""The one latency measurement used everywhere: datasets, benchmarks and the runtime's calibration.

HAT's protocol, made explicit: translate an N-token source into N target tokens (encoder once at batch 1, then N
incremental decoder steps at batch = beam, each with the output projection and an argmax that feeds the next
step), in eval mode under inference mode; warm-up runs first; R timed runs; drop the fastest and slowest 10%;
mean and std of the rest, encoder and decoder apart, in milliseconds. Unlike HAT, the thread count and CPU set
are explicit and recorded with the result, together with the machine.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from dynhat.model.seq2seq import Seq2SeqModel
from dynhat.space.config import SubTransformerConfig


def machine_info() -> dict[str, Any]:
    """What a latency number depends on besides the model."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {"cpu": cpu, "logical_cores": os.cpu_count(), "affinity": affinity, "torch": str(torch.__version__),
            "python": platform.python_version()}


@contextlib.contextmanager
def pinned(cpus: Sequence[int] | None, threads: int) -> Iterator[None]:
    """Run on ``cpus`` (all of the process's when None) with ``threads`` intra-op threads; restore both afterwards.

    The one way every step pins itself: latency numbers mean something only with the CPU set and thread count
    they were measured under, and a step that changed them must not leave the process changed."""
    old_threads, old_cpus = torch.get_num_threads(), os.sched_getaffinity(0)
    try:
        if cpus is not None:
            os.sched_setaffinity(0, set(cpus))
        torch.set_num_threads(threads)
        yield
    finally:
        os.sched_setaffinity(0, old_cpus)
        torch.set_num_threads(old_threads)


def trimmed_mean_std(samples: Sequence[float], trim: float = 0.1) -> tuple[float, float]:
    """Mean and std after dropping the fastest and slowest ``trim`` fraction (at least one each when trim > 0)."""
    ordered = sorted(samples)
    k = max(1, int(len(ordered) * trim)) if trim > 0 and len(ordered) > 2 else 0
    kept = ordered[k : len(ordered) - k]
    return statistics.fmean(kept), statistics.pstdev(kept)


def source_tokens(length: int, vocab_size: int, seed: int = 0) -> torch.Tensor:
    """A fixed pseudo-sentence of ordinary tokens (ids 4.., no specials) ending with eos (2), batch 1."""
    gen = torch.Generator().manual_seed(seed)
    src = torch.randint(4, vocab_size, (1, length), generator=gen)
    src[0, -1] = 2
    return src


def time_translation(model: Seq2SeqModel, config: SubTransformerConfig | None, src_tokens: torch.Tensor,
                     tgt_len: int, beam: int = 1) -> tuple[float, float]:
    """One timed translation: (encoder seconds, decoder seconds). Call under inference mode, model in eval."""
    start = time.perf_counter()
    enc = model.encode(src_tokens, config)
    mid = time.perf_counter()
    if beam > 1:
        enc = enc.reorder(torch.zeros(beam, dtype=torch.long))
    state = model.init_state(enc, config, tgt_len)
    tokens = torch.full((beam,), model.eos_idx, dtype=torch.long)
    for _ in range(tgt_len):
        tokens = model.decode_step(tokens, state, config).argmax(-1)
    return mid - start, time.perf_counter() - mid


@dataclass(frozen=True)
class LatencyResult:
    encoder_ms: float
    decoder_ms: float
    encoder_std_ms: float
    decoder_std_ms: float
    runs: int
    threads: int
    src_len: int
    tgt_len: int
    beam: int
    machine: dict[str, Any] = field(default_factory=dict)

    @property
    def total_ms(self) -> float:
        return self.encoder_ms + self.decoder_ms

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"total_ms": self.total_ms}


def measure_latency(model: Seq2SeqModel, config: SubTransformerConfig | None = None, *, src_len: int = 30,
                    tgt_len: int = 30, beam: int = 4, runs: int = 300, warmup: int = 10, threads: int = 1,
                    cpus: Sequence[int] | None = None, seed: int = 0) -> LatencyResult:
    """HAT's latency of ``config`` on this machine (see the module docstring)."""
    (result,) = _measure_interleaved(model, [config], src_len, tgt_len, beam, runs, warmup, threads, cpus, seed)
    return result


def measure_paired_latency(model: Seq2SeqModel, config: SubTransformerConfig | None,
                           reference: SubTransformerConfig | None, *, src_len: int = 30, tgt_len: int = 30,
                           beam: int = 4, runs: int = 300, warmup: int = 10, threads: int = 1,
                           cpus: Sequence[int] | None = None, seed: int = 0) -> tuple[LatencyResult, LatencyResult]:
    """The protocol for ``config`` with each timed run right after one of ``reference``: (config, reference).

    For a machine whose speed moves within seconds (a shared VM): the two series see the same moments, so the
    ratio of their means cancels what a probe every few configurations cannot follow (docs/latency.md).
    """
    ref, result = _measure_interleaved(model, [reference, config], src_len, tgt_len, beam, runs, warmup, threads,
                                       cpus, seed)
    return result, ref


def _measure_interleaved(model: Seq2SeqModel, configs: Sequence[SubTransformerConfig | None], src_len: int,
                         tgt_len: int, beam: int, runs: int, warmup: int, threads: int,
                         cpus: Sequence[int] | None, seed: int) -> list[LatencyResult]:
    """The protocol for each of ``configs``, their runs taken in turn (one run of each, then the next round)."""
    was_training = model.training
    model.eval()
    vocab = model.weights(configs[0]).decoder_embed.shape[0]
    src = source_tokens(src_len, vocab, seed)
    times: list[tuple[list[float], list[float]]] = [([], []) for _ in configs]
    try:
        with pinned(cpus, threads), torch.inference_mode():
            for _ in range(warmup):
                for config in configs:
                    time_translation(model, config, src, tgt_len, beam)
            for _ in range(runs):
                for config, (enc_s, dec_s) in zip(configs, times, strict=True):
                    e, d = time_translation(model, config, src, tgt_len, beam)
                    enc_s.append(e * 1e3)
                    dec_s.append(d * 1e3)
            info = machine_info()
    finally:
        model.train(was_training)
    results = []
    for enc_s, dec_s in times:
        (enc_mean, enc_std), (dec_mean, dec_std) = trimmed_mean_std(enc_s), trimmed_mean_std(dec_s)
        results.append(LatencyResult(enc_mean, dec_mean, enc_std, dec_std, runs, threads, src_len, tgt_len, beam,
                                     info))
    return results
