"""A training run from text to checkpoints: fetch (or read) the corpus, build or restore the vocabulary, batch, train.

The vocabulary is stored in every checkpoint (``dynhat.inference.checkpoint``), so a checkpoint alone can
translate and a resumed run tokenizes exactly as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dynhat.data.batching import Batch, TokenBatcher
from dynhat.data.corpus import ParallelCorpus
from dynhat.data.fetch import fetch_multi30k, load_multi30k
from dynhat.data.vocab import Vocabulary
from dynhat.errors import ConfigError
from dynhat.hat.text import HatVocabulary
from dynhat.inference.checkpoint import TRAINING_FIELDS, load_checkpoint, vocab_fields, vocab_from_checkpoint
from dynhat.space import load_space
from dynhat.train.settings import TrainSettings
from dynhat.train.trainer import Trainer


@dataclass
class PreparedData:
    vocab: Vocabulary | HatVocabulary
    train: TokenBatcher
    valid: list[Batch]


def prepare(settings: TrainSettings, train: ParallelCorpus, valid: ParallelCorpus,
            vocab: Vocabulary | HatVocabulary | None = None) -> PreparedData:
    vocab = vocab or Vocabulary.train(train.src + train.tgt, settings.vocab_size)

    def ids(lines: list[str]) -> list[list[int]]:
        return [vocab.encode(line) for line in lines]

    batcher = TokenBatcher(ids(train.src), ids(train.tgt), settings.max_tokens, settings.seed, settings.max_positions)
    valid_batches = TokenBatcher(ids(valid.src), ids(valid.tgt), settings.max_tokens, shuffle=False,
                                 max_positions=10**6).epoch(0)
    return PreparedData(vocab, batcher, valid_batches)


def build_trainer(settings: TrainSettings, run_dir: str | Path, train: ParallelCorpus,
                  valid: ParallelCorpus) -> tuple[Trainer, Vocabulary | HatVocabulary]:
    """A trainer for ``run_dir`` (resumed from its last checkpoint when there is one) and its vocabulary."""
    last = Path(run_dir) / "checkpoint_last.pt"
    start = last if last.exists() else settings.init_from
    payload = load_checkpoint(start) if start else {}
    missing = [name for name in TRAINING_FIELDS if name not in payload]
    if start and missing:
        raise ConfigError(f"{start}: holds a model without training state ({missing[0]}; converted from HAT?); "
                          "training resumes only from a dynhat training checkpoint", field="init-from")
    vocab = vocab_from_checkpoint(payload, str(start)) if start else None
    data = prepare(settings, train, valid, vocab)
    epochs: dict[int, list[Batch]] = {}

    def epoch_batches(epoch: int) -> list[Batch]:
        if epoch not in epochs:
            epochs.clear()
            epochs[epoch] = data.train.epoch(epoch)
        return epochs[epoch]

    trainer = Trainer(settings, load_space(settings.space), len(data.vocab), run_dir, epoch_batches, data.valid,
                      extra_state=vocab_fields(data.vocab))
    trainer.resume()
    return trainer, data.vocab


def train_multi30k(settings: TrainSettings, run_dir: str | Path, data_root: str | Path | None = None,
                   mirror: str | Path | None = None, progress: bool = True,
                   piece_minutes: float | None = None) -> Trainer:
    root = fetch_multi30k(data_root, mirror, progress=progress)
    trainer, _ = build_trainer(settings, run_dir, load_multi30k("train", root), load_multi30k("val", root))
    trainer.train(progress=progress, piece_minutes=piece_minutes)
    return trainer
