"""Decoding variants: the searched SubTransformers also served with a narrower beam.

The search ranks SubTransformers at one beam (HAT's protocol: beam 4). When serving, the beam is a second knob
that costs nothing to switch, as CTranslate2 and Marian users set it per request: greedy search runs one decoder
row instead of four and skips the beam's bookkeeping, which halves a served sentence of every point on a 2-core
CPU and lowers the library's floor more than the search's smallest SubTransformer can (docs/search.md). A variant
is verified as a searched point is: the measurement protocol at its beam on the device, BLEU on the library's
sentences (``PointLibrary.bleu_set``) at its beam. Its validation loss is its SubTransformer's; the runtime ranks
points by that BLEU (``PointLibrary.quality``), and ``PointLibrary.efficient`` drops the points another beats on
both counts.

Precision is the third knob (``dynhat serve --precision int8``): ``add_int8_bleu`` scores each point on the same
sentences with its projections in int8, beside its float32 BLEU. ``rescore_bleu`` measures a library's BLEU again
on other sentences (``dynhat points bleu``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from tqdm import tqdm

from dynhat.data.corpus import ParallelCorpus
from dynhat.inference.measure import measure_latency
from dynhat.inference.points import OperatingPoint, PointLibrary
from dynhat.model.seq2seq import Seq2SeqModel
from dynhat.model.supertransformer import SuperTransformer
from dynhat.space.config import SubTransformerConfig
from dynhat.translate.bleu import sacrebleu_bleu
from dynhat.translate.translator import Translator


def point_bleu(model: Seq2SeqModel, vocab: Any, config: SubTransformerConfig, sentences: ParallelCorpus,
               beam: int) -> float:
    """An operating point's sacreBLEU on ``sentences``, as the library records it."""
    hyps = Translator(model, vocab, config, beam=beam).translate(sentences.src)
    return round(sacrebleu_bleu(hyps, sentences.tgt)[0], 2)


def add_variants(library: PointLibrary, model: SuperTransformer, vocab: Any, sentences: ParallelCorpus,
                 beams: Sequence[int] = (1,), runs: int = 50, src_len: int = 30, tgt_len: int = 30,
                 cpus: Sequence[int] | None = None, progress: bool = True) -> PointLibrary:
    """``library`` plus each of its SubTransformers at each of ``beams`` it does not already hold, measured with
    the library's thread count (and on ``cpus``: those its latencies were measured on)."""
    if any(b < 1 for b in beams):
        raise ValueError(f"beams must be at least 1, got {list(beams)}")
    held = {p.id for p in library.points}
    parents: dict[str, OperatingPoint] = {}
    for p in library.sorted():  # the tightest constraint a SubTransformer won is its variants' constraint
        parents.setdefault(p.config.id, p)
    todo = [(parent, beam) for parent in parents.values() for beam in beams
            if replace(parent, beam=beam).id not in held]
    variants = []
    for parent, beam in tqdm(todo, desc="decoding variants", unit="point", disable=not progress):
        measured = measure_latency(model, parent.config, src_len=src_len, tgt_len=tgt_len, beam=beam, runs=runs,
                                   threads=library.threads, cpus=cpus).total_ms
        variants.append(OperatingPoint(parent.config, parent.constraint_ms, None, parent.valid_loss, measured,
                                       point_bleu(model, vocab, parent.config, sentences, beam), parent.params, beam))
    return replace(library, points=[*library.points, *variants])


def add_int8_bleu(library: PointLibrary, model: SuperTransformer, vocab: Any, sentences: ParallelCorpus,
                  progress: bool = True) -> PointLibrary:
    """``library`` with every point's BLEU on ``sentences`` also in int8 (``bleu_int8``): each SubTransformer
    quantized once (``model.quantized.Int8Model``, as ``dynhat serve --precision int8`` serves it) and decoded at
    the point's beam, so a user sees beside ``bleu`` what serving in int8 costs."""
    from dynhat.model.quantized import Int8Model

    int8 = Int8Model(model, list({p.config: None for p in library.points}))
    scores: dict[str, float] = {}
    for p in tqdm(library.unique(), desc="int8 BLEU", unit="point", disable=not progress):
        scores[p.id] = point_bleu(int8, vocab, p.config, sentences, p.beam)
    return replace(library, points=[replace(p, bleu_int8=scores[p.id]) for p in library.points])


def rescore_bleu(library: PointLibrary, model: SuperTransformer, vocab: Any, sentences: ParallelCorpus,
                 progress: bool = True) -> PointLibrary:
    """``library`` with every point's BLEU measured again on ``sentences``, those its ``bleu_set`` names
    (``dynhat.recipes.points.with_bleu_set`` moves a library to others), so its served points are ranked on them;
    int8 BLEU, where the library holds it, is measured again on the same sentences."""
    scores = {p.id: point_bleu(model, vocab, p.config, sentences, p.beam)
              for p in tqdm(library.unique(), desc="BLEU", unit="point", disable=not progress)}
    scored = replace(library, points=[replace(p, bleu=scores[p.id], bleu_int8=None) for p in library.points])
    if any(p.bleu_int8 is not None for p in library.points):
        return add_int8_bleu(scored, model, vocab, sentences, progress)
    return scored
