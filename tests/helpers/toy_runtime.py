"""A toy SuperTransformer with three operating points and an id vocabulary, for runtime and service tests."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
import yaml

from dynhat.inference.points import OperatingPoint, PointLibrary
from dynhat.model import ModelSettings, SuperTransformer
from dynhat.space import load_space
from dynhat.space.sampling import largest, middle, smallest
from helpers.toy_train import TOY_SPACE, VOCAB


class IdVocab:
    """Text is whitespace-separated token ids (ids 4.. are ordinary tokens)."""

    eos, pad = 2, 1

    def encode(self, text: str) -> list[int]:
        return [int(t) for t in text.split()]

    def decode(self, ids: Iterable[int]) -> str:
        return " ".join(str(i) for i in ids)

    def __len__(self) -> int:
        return VOCAB


def toy_parts(tmp_path: Path) -> tuple[SuperTransformer, IdVocab, PointLibrary]:
    path = tmp_path / "toy.yml"
    path.write_text(yaml.safe_dump(TOY_SPACE))
    space = load_space(path)
    torch.manual_seed(0)
    model = SuperTransformer(space, ModelSettings(vocab_size=VOCAB, max_positions=64)).eval()
    points = [OperatingPoint(c, ms, ms, loss) for c, ms, loss in
              ((smallest(space), 1.0, 3.0), (middle(space), 2.0, 2.5), (largest(space), 3.0, 2.0))]
    library = PointLibrary(points, str(path), {"path": "toy", "sha256": "0"}, {"cpu": "toy"}, 1)
    return model, IdVocab(), library


def sentences(count: int, seed: int = 0) -> list[str]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        n = int(torch.randint(2, 9, (1,), generator=gen))
        out.append(" ".join(str(int(t)) for t in torch.randint(4, VOCAB, (n,), generator=gen)))
    return out
