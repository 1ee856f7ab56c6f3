"""A self-contained toy training checkpoint (toy space, sentencepiece vocabulary of caption-like lines)."""

from __future__ import annotations

from pathlib import Path

import torch

from dynhat.data.vocab import Vocabulary
from dynhat.inference.checkpoint import model_fields, save_checkpoint
from dynhat.model import ModelSettings, SuperTransformer
from dynhat.space import DesignSpace
from dynhat.train.settings import TrainSettings
from helpers.toy_train import TOY_SPACE

LINES = [f"the {w} dog runs over the {v} hill" for w in ("red", "big", "old", "small") for v in ("green", "far")]


def toy_checkpoint(path: Path, seed: int = 0) -> tuple[SuperTransformer, Vocabulary]:
    """Write a checkpoint that ``load_trained`` reads (random weights) and return its model and vocabulary."""
    vocab = Vocabulary.train(LINES * 5, 60)
    torch.manual_seed(seed)
    model = SuperTransformer(DesignSpace.from_dict(TOY_SPACE), ModelSettings(vocab_size=len(vocab)))
    save_checkpoint(path, {**model_fields(model, vocab, TrainSettings().to_dict()),
                           "state": {"update": 7, "elapsed_s": 36.0, "cpu_s": 30.0}})
    return model.eval(), vocab
