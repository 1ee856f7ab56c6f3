"""Score a SubTransformer of a trained SuperTransformer: BLEU on a test set and, given one, its validation loss
(the training loss, so this recipe sits above both ``translate`` and ``train``)."""

from __future__ import annotations

from dataclasses import dataclass

from dynhat.data.batching import TokenBatcher
from dynhat.data.corpus import ParallelCorpus
from dynhat.model import SuperTransformer
from dynhat.space import SubTransformerConfig
from dynhat.train.trainer import validation_loss
from dynhat.translate.bleu import BleuScores, score
from dynhat.translate.translator import TextVocabulary, Translator


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
