"""A tiny, deterministic training job for the trainer's tests (run as a script, possibly under torchrun)."""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from dynhat.space import DesignSpace
from dynhat.train.settings import TrainSettings
from dynhat.train.trainer import Trainer, init_distributed

TOY_SPACE = {
    "encoder-embed-dim": 16, "decoder-embed-dim": 16, "encoder-ffn-embed-dim": 32, "decoder-ffn-embed-dim": 32,
    "encoder-layers": 3, "decoder-layers": 2, "encoder-attention-heads": 2, "decoder-attention-heads": 2,
    "qkv-dim": 8,
    "encoder-embed-choice": [16, 8], "decoder-embed-choice": [16, 8], "encoder-ffn-embed-dim-choice": [32, 16],
    "decoder-ffn-embed-dim-choice": [32, 16], "encoder-layer-num-choice": [3], "decoder-layer-num-choice": [2, 1],
    "encoder-self-attention-heads-choice": [2, 1], "decoder-self-attention-heads-choice": [2, 1],
    "decoder-ende-attention-heads-choice": [2, 1], "decoder-arbitrary-ende-attn-choice": [-1, 1, 2],
}  # fmt: skip
VOCAB = 24


@dataclass
class ToyBatch:
    src_tokens: torch.Tensor
    prev_output_tokens: torch.Tensor
    target: torch.Tensor
    ntokens: int


def toy_batches(count: int, seed: int) -> list[ToyBatch]:
    """Copy task: target = source, so the loss really falls."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        src = torch.randint(4, VOCAB, (4, 7), generator=gen)
        src[:, -1] = 2
        prev = torch.cat([torch.full((4, 1), 2), src[:, :-1]], dim=1)
        out.append(ToyBatch(src, prev, src.clone(), int(src.numel())))
    return out


def make_trainer(run_dir: str, max_updates: int, update_freq: int = 1, sampling: str = "uniform",
                 dropout: float = 0.3, distill: float = 0.0, space: dict | None = None,
                 init_from: str | None = None, **overrides: object) -> Trainer:
    train = toy_batches(16, 0)

    def epoch_batches(epoch: int) -> list[ToyBatch]:
        order = list(range(len(train)))
        random.Random(epoch).shuffle(order)
        return [train[i] for i in order]

    settings = TrainSettings(max_updates=max_updates, update_freq=update_freq, sampling=sampling, vocab_size=VOCAB,
                             validate_every=10, save_every=3, warmup_updates=5, max_lr=2e-3,
                             dropout=dropout, attention_dropout=dropout / 3, distill=distill, init_from=init_from,
                             **overrides)  # type: ignore[arg-type]
    return Trainer(settings, DesignSpace.from_dict(space or TOY_SPACE), VOCAB, run_dir, epoch_batches,
                   toy_batches(2, 1))


if __name__ == "__main__":
    torch.set_num_threads(1)
    init_distributed()
    run_dir, updates, update_freq = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    # argv: run_dir updates update_freq [sampling] [dropout] [distill]; rank files are written by every rank
    sampling = sys.argv[4] if len(sys.argv) > 4 else "uniform"
    dropout, distill = (float(sys.argv[i]) if len(sys.argv) > i else d for i, d in ((5, 0.3), (6, 0.0)))
    trainer = make_trainer(run_dir, updates, update_freq, sampling, dropout, distill)
    trainer.resume()
    trainer.train(progress=False)
    rank_file = Path(run_dir) / f"final_rank{trainer.rank}.pt"
    torch.save({"model": trainer.model.state_dict(), "log": (Path(run_dir) / "log.csv").read_text()
                if trainer.rank == 0 else ""}, rank_file)
