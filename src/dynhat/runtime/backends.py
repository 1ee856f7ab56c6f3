"""What runs an operating point for the dynamic translator: dynhat itself (float32 or int8) or CTranslate2.

A backend gives each point a translator (``hypotheses_of(encoded)``), does the switch to a point (the work between
the controller's decision and the point being in use), sets and pins the thread count, and times the latency
protocol for calibration. The controller, budgets, cost models and switching logic are the translator's and do
not change with the backend.

- ``DynhatBackend(model, precision="fp32")``: the SuperTransformer's shared weights, each point's strided slices
  copied contiguous once when the backend is built (``model.serving.ServingModel``: 0.6-4.1 MB a point here);
  a switch is a look-up of the point's record. ``precision="int8"`` also quantizes every point once
  (``model.quantized.Int8Model``); a switch is then a look-up of the point's int8 record.
- ``CT2Backend``: every point a CTranslate2 model folder (``inference.ct2.export_points``, or an engine folder,
  ``inference.engine``), loaded once per thread count it may serve at; a switch is an index into the loaded
  engines. Each SubTransformer holds its own weights (no sharing): memory grows with the points and the counts.
  This module and ``CT2Backend`` import no torch, so a service over an engine folder runs without it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from dynhat.errors import DataError
from dynhat.inference.points import OperatingPoint
from dynhat.runtime.costs import CALIBRATION_TOKENS as PROTOCOL_TOKENS
from dynhat.translate.interface import TextVocabulary

if TYPE_CHECKING:
    from dynhat.model.seq2seq import Seq2SeqModel
    from dynhat.translate.translator import Translator

PRECISIONS = ("fp32", "int8")


class Backend(Protocol):
    name: str

    def translator(self, point: OperatingPoint) -> Any: ...  # has hypotheses_of(list of id lists) -> list[Hypothesis]

    def switch(self, point: OperatingPoint) -> None: ...

    def set_threads(self, threads: int) -> None: ...

    def pinned(self, threads: int) -> contextlib.AbstractContextManager[None]: ...

    def protocol_ms(self, point: OperatingPoint, runs: int, threads: int) -> tuple[float, float]: ...


class DynhatBackend:
    """dynhat's own decoder over ``model``'s shared weights, in float32 or int8, each point prepared once."""

    def __init__(self, model: Seq2SeqModel, vocab: TextVocabulary, points: Sequence[OperatingPoint] = (),
                 precision: str = "fp32") -> None:
        if precision not in PRECISIONS:
            raise DataError(f"precision: expected one of {list(PRECISIONS)}, got {precision!r}")
        configs = [p.config for p in points]  # each prepared now: later switches are look-ups
        if precision == "int8":
            from dynhat.model.quantized import Int8Model

            model = Int8Model(model, configs)
        else:
            from dynhat.model.serving import ServingModel

            model = ServingModel(model, configs)
        self.model, self.vocab, self.precision = model, vocab, precision
        self.name = f"dynhat {precision}"

    def translator(self, point: OperatingPoint) -> Translator:
        from dynhat.translate.translator import Translator

        return Translator(self.model, self.vocab, point.config, beam=point.beam)

    def switch(self, point: OperatingPoint) -> None:
        self.model.weights(point.config)

    def set_threads(self, threads: int) -> None:
        import torch

        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)

    def pinned(self, threads: int) -> contextlib.AbstractContextManager[None]:
        from dynhat.inference.measure import pinned

        return pinned(None, threads)

    def protocol_ms(self, point: OperatingPoint, runs: int, threads: int) -> tuple[float, float]:
        """(encoder ms, decoder ms) of the latency protocol (30-token source, 30 steps at the point's beam)."""
        from dynhat.inference.measure import measure_latency

        r = measure_latency(self.model, point.config, src_len=PROTOCOL_TOKENS, tgt_len=PROTOCOL_TOKENS,
                            beam=point.beam, runs=runs, warmup=2, threads=threads)
        return r.encoder_ms, r.decoder_ms


class CT2Backend:
    """Every point's CTranslate2 folder ``folder / <SubTransformer id>`` (``inference.ct2.export_points``) loaded
    with ``compute_type`` ("default": as exported), once for each thread count from 1 to ``threads``.

    CTranslate2 fixes a model's intra-op threads when it loads it, so serving at another count means another
    loaded copy: memory grows with ``threads`` (one copy at the default of 1). A SubTransformer is loaded once per
    count whatever beams its points decode with. Setting the count points every translator at the copies loaded
    for it: a dictionary look-up per point, no loading.
    """

    def __init__(self, vocab: TextVocabulary, points: Sequence[OperatingPoint], folder: str | Path,
                 compute_type: str = "default", threads: int = 1) -> None:
        from dynhat.inference.ct2 import CT2Translator, load_model

        if threads < 1:
            raise DataError(f"threads: expected a whole number >= 1, got {threads}")
        self.name, self.threads, self.max_threads = f"ctranslate2 {compute_type}", 1, threads
        self.vocab_size = len(vocab)
        for p in points:
            if not (Path(folder) / p.config.id / "model.bin").is_file():
                raise DataError(f"point {p.id}: no CTranslate2 model in {Path(folder) / p.config.id} (export it "
                                "first: inference.ct2.export_points or dynhat export --engine ctranslate2)")
        loaded: dict[str, dict[int, Any]] = {}  # SubTransformer id -> its loaded copies by thread count
        self._engines: dict[str, CT2Translator] = {}
        for p in points:
            path = Path(folder) / p.config.id
            if p.config.id not in loaded:
                loaded[p.config.id] = {k: load_model(path, compute_type, k) for k in range(1, threads + 1)}
            self._engines[p.id] = CT2Translator(path, vocab, beam=p.beam, engines=loaded[p.config.id])

    def translator(self, point: OperatingPoint) -> Any:
        return self._engines[point.id]

    def switch(self, point: OperatingPoint) -> None:
        _ = self._engines[point.id]  # the switch is this look-up

    def set_threads(self, threads: int) -> None:
        if threads == self.threads:
            return
        if not 1 <= threads <= self.max_threads:
            raise DataError(f"threads: this CTranslate2 backend was loaded for up to {self.max_threads} "
                            f"thread{'s' if self.max_threads > 1 else ''}, not {threads} (CTranslate2 fixes a "
                            "model's threads when it loads it: give the most it may serve at when building it)")
        for translator in self._engines.values():
            translator.use_threads(threads)
        self.threads = threads

    @contextlib.contextmanager
    def pinned(self, threads: int) -> Iterator[None]:
        """Serve at ``threads`` inside the block, at the count before it afterwards."""
        before = self.threads
        self.set_threads(threads)
        try:
            yield
        finally:
            self.set_threads(before)

    def protocol_ms(self, point: OperatingPoint, runs: int, threads: int) -> tuple[float, float]:
        """The protocol through CTranslate2: ``steps`` forced decoder steps, the encoder taken as the 1-step run
        less one step, at ``threads`` (the copies loaded for that count)."""
        import random

        engine = self._engines[point.id]
        rng = random.Random(0)  # a fixed pseudo-sentence of ordinary tokens, as the protocol's
        ids = [rng.randrange(4, self.vocab_size) for _ in range(PROTOCOL_TOKENS - 1)]
        with self.pinned(threads):
            engine.forced_seconds(ids, PROTOCOL_TOKENS)
            full = sorted(engine.forced_seconds(ids, PROTOCOL_TOKENS) for _ in range(runs))[runs // 2] * 1e3
            one = sorted(engine.forced_seconds(ids, 1) for _ in range(runs))[runs // 2] * 1e3
        step = max(0.0, (full - one) / (PROTOCOL_TOKENS - 1))
        return max(0.0, one - step), PROTOCOL_TOKENS * step
