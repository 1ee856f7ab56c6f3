"""Load a trained checkpoint, pick a SubTransformer, translate a test set and score it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dynhat.data.batching import TokenBatcher
from dynhat.data.corpus import ParallelCorpus
from dynhat.data.vocab import Vocabulary
from dynhat.errors import ConfigError
from dynhat.hat.text import HatVocabulary
from dynhat.model import ModelSettings, SuperTransformer
from dynhat.release import is_release, load_release
from dynhat.space import DesignSpace, SubTransformerConfig, largest, middle, smallest
from dynhat.train.checkpoint import load_checkpoint
from dynhat.train.run import vocab_from_checkpoint
from dynhat.train.trainer import validation_loss
from dynhat.translate.bleu import BleuScores, score
from dynhat.translate.translator import TextVocabulary, Translator

NAMED = {"largest": largest, "smallest": smallest, "middle": middle}


def load_trained(path: str | Path) -> tuple[SuperTransformer, Vocabulary | HatVocabulary]:
    """A SuperTransformer and its vocabulary from a training or converted checkpoint (self-contained), in eval
    mode: a sentencepiece ``Vocabulary`` or, for a model converted from HAT, a ``HatVocabulary``. A release folder
    or the name of a shipped release (``dynhat.release``) loads the same way."""
    if is_release(path):
        return load_release(path)
    payload = load_checkpoint(path)
    space = DesignSpace.from_dict(payload["space"], source=str(path))
    settings = payload["settings"]
    model = SuperTransformer(space, ModelSettings(vocab_size=payload["vocab_size"], dropout=settings["dropout"],
                                                  attention_dropout=settings["attention_dropout"]))
    model.load_state_dict(payload["model"])
    return model.eval(), vocab_from_checkpoint(payload, str(path))


def resolve_config(spec: str, space: DesignSpace) -> SubTransformerConfig:
    """``largest``/``smallest``/``middle``, a HAT SubTransformer YAML, or the id of one of the named ones."""
    if spec in NAMED:
        return NAMED[spec](space)
    if Path(spec).is_file():
        return SubTransformerConfig.from_yaml(spec).validate(space, source=spec)
    for make in NAMED.values():
        if make(space).id == spec:
            return make(space)
    raise ConfigError(f"not a file, not one of {list(NAMED)} and not the id of one of them", field=spec)


@dataclass(frozen=True)
class Evaluation:
    config: SubTransformerConfig
    bleu: BleuScores
    valid_loss: float | None
    hypotheses: list[str]


def evaluate(model: SuperTransformer, vocab: TextVocabulary, config: SubTransformerConfig, test: ParallelCorpus,
             valid: ParallelCorpus | None = None, beam: int = 4, lenpen: float = 0.6) -> Evaluation:
    hyps = Translator(model, vocab, config, beam=beam, lenpen=lenpen).translate(test.src)
    loss = None
    if valid is not None:
        batches = TokenBatcher([vocab.encode(s) for s in valid.src], [vocab.encode(s) for s in valid.tgt], 4096,
                               shuffle=False, max_positions=10**6).epoch(0)
        loss = validation_loss(model, batches, config, 0.1)[0]
    return Evaluation(config, score(hyps, test.tgt, test.tgt_lang), loss, hyps)
