"""Score a SubTransformer of a trained SuperTransformer: BLEU on a test set and, given one, its validation loss
(the training loss, so this recipe sits above both ``translate`` and ``train``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dynhat.data.batching import TokenBatcher
from dynhat.data.corpus import ParallelCorpus, read_parallel
from dynhat.model import SuperTransformer
from dynhat.space import SubTransformerConfig
from dynhat.train.trainer import validation_loss
from dynhat.translate.bleu import BleuScores, score
from dynhat.translate.interface import TextVocabulary
from dynhat.translate.translator import Translator


@dataclass(frozen=True)
class Evaluation:
    config: SubTransformerConfig
    bleu: BleuScores
    valid_loss: float | None
    hypotheses: list[str]


def evaluate(model: SuperTransformer, vocab: TextVocabulary, config: SubTransformerConfig, test: ParallelCorpus,
             valid: ParallelCorpus | None = None, beam: int = 4, lenpen: float = 0.6) -> Evaluation:
    """``config``'s translations of ``test`` and their BLEU, and its validation loss on ``valid`` if given."""
    hyps = Translator(model, vocab, config, beam=beam, lenpen=lenpen).translate(test.src)
    loss = None
    if valid is not None:
        batches = TokenBatcher([vocab.encode(s) for s in valid.src], [vocab.encode(s) for s in valid.tgt], 4096,
                               shuffle=False, max_positions=10**6).epoch(0)
        loss = validation_loss(model, batches, config, 0.1)[0]
    return Evaluation(config, score(hyps, test.tgt, test.tgt_lang), loss, hyps)


def evaluate_files(model: SuperTransformer, vocab: TextVocabulary, config: SubTransformerConfig, src: str | Path,
                   ref: str | Path, beam: int = 4, lenpen: float = 0.6) -> Evaluation:
    """``evaluate`` on a user's own line-aligned source and reference files (plain or ``.gz``): BLEU against the
    references and the loss on them (``valid_loss``), so any test set scores like Multi30k's."""
    test = read_parallel(src, ref)
    return evaluate(model, vocab, config, test, test, beam, lenpen)
