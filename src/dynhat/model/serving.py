"""Serving copies of operating points: each point's weight record prepared once for decoding, then looked up.

A SubTransformer inherited from the SuperTransformer computes with views of the shared weights. Where a point is
narrower than the SuperTransformer, those views are strided: a ``[f, 128]`` slice of a ``[f_max, 192]`` matrix
reads 128 of every 192 floats, and at batch 1-4, where a step streams each matrix once, that made the inherited
point 3-4 % slower than its extracted dense model (benchmarks/model_latency.py). ``ServingModel`` keeps, for each
point it serves, a record whose strided layer matrices are contiguous copies; everything already contiguous
(rows of a matrix, biases, norms) and the shared embedding and positions stay views. A point costs the strided
part of its layers (0.6-4.1 MB in float32 for points of the shipped release, whose SuperTransformer is 27.5 MB),
and a switch stays a look-up.

The records are a snapshot of the base weights: prepare them again (a new ``ServingModel``) after changing
those. ``Int8Model`` (``dynhat.model.quantized``) is a serving model whose records are also quantized.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import fields, is_dataclass, replace
from typing import Any, TypeVar

from torch import Tensor

from dynhat.model.seq2seq import Seq2SeqModel
from dynhat.model.weights import SubTransformerWeights
from dynhat.space.config import SubTransformerConfig

R = TypeVar("R")


def _contiguous(record: R) -> R:
    """``record`` (a weight dataclass) with every tensor detached and contiguous (a copy only where strided)."""
    changes: dict[str, Any] = {}
    for f in fields(record):  # type: ignore[arg-type]
        value = getattr(record, f.name)
        if isinstance(value, Tensor):
            changes[f.name] = value.detach().contiguous()
        elif is_dataclass(value):
            changes[f.name] = _contiguous(value)
    return replace(record, **changes)  # type: ignore[type-var]


def contiguous_layers(w: SubTransformerWeights) -> SubTransformerWeights:
    """``w`` with its layers' (and final norms') strided tensors copied contiguous. The embeddings and positions
    stay as they are: the shared table is stored so that its slices stream well (``column_major_embedding``)."""
    norms = {name: None if getattr(w, name) is None else _contiguous(getattr(w, name))
             for name in ("encoder_norm", "decoder_norm")}
    return replace(w, encoder=tuple(_contiguous(layer) for layer in w.encoder),
                   decoder=tuple(_contiguous(layer) for layer in w.decoder), **norms)


class ServingModel(Seq2SeqModel):
    """``base`` for inference, each configuration's record prepared once by ``prepare`` and cached. ``configs``:
    those to prepare now (``None`` stands for the base model's default, e.g. a dense model's own configuration),
    so serving a library never prepares a record on a request."""

    def __init__(self, base: Seq2SeqModel, configs: Iterable[SubTransformerConfig | None] = ()) -> None:
        super().__init__()
        self.base = base.eval()
        self.padding_idx, self.eos_idx = base.padding_idx, base.eos_idx
        self._records: dict[SubTransformerConfig, SubTransformerWeights] = {}
        self._lock = threading.Lock()
        self.eval()
        for config in configs:
            self.weights(config)

    def prepare(self, w: SubTransformerWeights) -> SubTransformerWeights:
        return contiguous_layers(w)

    def weights(self, config: SubTransformerConfig | None = None) -> SubTransformerWeights:
        record = None if config is None else self._records.get(config)
        if record is None:
            view = self.base.weights(config)
            record = self._records.get(view.config)
            if record is None:
                record = self.prepare(view)
                with self._lock:
                    record = self._records.setdefault(view.config, record)
        return record

    def train(self, mode: bool = True) -> ServingModel:
        if mode:
            raise ValueError("a serving model is for inference only: train the base model and serve it again")
        return super().train(False)
