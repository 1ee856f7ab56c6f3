"""Adding one SubTransformer to an operating-point library, verified as the search verifies its points.

The search's latency predictor decides which configurations a constraint admits; on a noisy machine it can leave
the space's real floor out of the library (the tightest constraint of `runs/points.yml` got a 2-decoder-layer
point although a 1-layer one, found by another search on the same SuperTransformer, is faster and better). The
added point is measured with the protocol, scored on the library's own validation subset and BLEU sentences, and
its constraint is its measured latency (one it meets on this device).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from dynhat.data.corpus import ParallelCorpus, read_parallel
from dynhat.data.fetch import SPLITS, load_multi30k
from dynhat.errors import ConfigError
from dynhat.inference.measure import measure_latency
from dynhat.inference.points import OperatingPoint, PointLibrary
from dynhat.latency.predictor import LatencyPredictor
from dynhat.search.decoding import point_bleu
from dynhat.search.fitness import LossFitness, validation_subset
from dynhat.search.operating_points import first_sentences, predictor_latency
from dynhat.space.config import SubTransformerConfig
from dynhat.space.cost import count_params
from dynhat.translate.interface import TextVocabulary

BLEU_KEYS = ("bleu_split", "bleu_files", "bleu_sentences", "test_sentences")  # of a library's fitness


def find_point(library: PointLibrary, point_id: str, source: str) -> OperatingPoint:
    """The point ``point_id`` of ``library`` (read from ``source``)."""
    for point in library.points:
        if point.id == point_id:
            return point
    raise ConfigError(f"no point {point_id} (it has {[p.id for p in library.points]})", source=source,
                      field="points")


def with_bleu_set(library: PointLibrary, count: int | None, split: str | None = None,
                  files: Sequence[str | Path] | None = None) -> PointLibrary:
    """``library`` stating its BLEU on the first ``count`` sentences (None: all) of Multi30k's ``split`` or of
    ``files`` (source, reference: a development set of one's own); what ``bleu_sentences`` then loads and
    ``rescore_bleu`` scores."""
    if (split is None) == (files is None):
        raise ValueError("give one of split and files")
    kept = {k: v for k, v in library.fitness.items() if k not in BLEU_KEYS}
    where = {"bleu_split": split} if files is None else {"bleu_files": [str(f) for f in files]}
    return replace(library, fitness=kept | where | {"bleu_sentences": count})


def bleu_sentences(library: PointLibrary, root: str | Path | None) -> ParallelCorpus:
    """The sentences ``library`` states its BLEU on (``PointLibrary.bleu_set``): its files, or its split of the
    Multi30k at ``root``."""
    fit, (split, count) = library.fitness, library.bleu_set()
    files = fit.get("bleu_files")
    if count is not None and (not isinstance(count, int) or count < 1):
        raise ConfigError(f"bleu_sentences: expected a positive integer or none, got {count!r}", field="fitness")
    if files is not None:
        if not (isinstance(files, list) and len(files) == 2 and all(isinstance(f, str) for f in files)):
            raise ConfigError(f"bleu_files: expected [source file, reference file], got {files!r}", field="fitness")
        return first_sentences(read_parallel(*files), count)
    if split not in SPLITS:
        raise ConfigError(f"bleu_split: expected one of {list(SPLITS)}, got {split!r}", field="fitness")
    if root is None:
        raise ValueError(f"the library's BLEU is on Multi30k's {split}: give the Multi30k folder")
    return first_sentences(load_multi30k(split, root), count)


def add_point(library: PointLibrary, config: SubTransformerConfig, model: Any, vocab: TextVocabulary,
              predictor: LatencyPredictor, valid: ParallelCorpus, sentences: ParallelCorpus, runs: int = 300
              ) -> OperatingPoint:
    """Verify ``config`` (latency, validation loss as the library's fitness settings say, BLEU on ``sentences``:
    ``bleu_sentences``) and append it to ``library``; returns the new point."""
    if any(p.id == config.id for p in library.points):
        raise ConfigError(f"{config.id} is already in the library", field="points")
    fit = library.fitness
    subset = validation_subset(valid, fit["valid_sentences"], fit.get("seed", 0))
    with LossFitness(model, vocab, subset, precision=fit.get("precision", "float32")) as fitness:
        loss = fitness(config)
    measured = measure_latency(model, config, runs=runs, threads=library.threads).total_ms
    bleu = point_bleu(model, vocab, config, sentences, beam=4)
    point = OperatingPoint(config, float(math.ceil(measured)), predictor_latency(predictor)(config), loss, measured,
                           bleu, count_params(config, model.space, len(vocab)).total)
    library.points.append(point)
    return point
