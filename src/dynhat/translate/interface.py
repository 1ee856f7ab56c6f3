"""What every translation engine exchanges with the rest of dynhat: the vocabulary it reads and writes text
with, the hypotheses it returns and the default output-length limits.

Kept free of torch, so a process serving an engine-exported library (CTranslate2) never imports it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

# A hypothesis may hold at most int(max_len_a * src_len + max_len_b) tokens before its eos (fairseq's rule; the
# defaults suit Multi30k's short captions, see translate.beam).
DEFAULT_MAX_LEN_A = 1.2
DEFAULT_MAX_LEN_B = 10


class TextVocabulary(Protocol):
    """What a translator needs of a vocabulary (``dynhat.data.vocab.Vocabulary`` or a stand-in in tests)."""

    eos: int
    pad: int

    def encode(self, text: str) -> list[int]: ...  # subword ids, without bos/eos

    def decode(self, ids: Iterable[int]) -> str: ...  # detokenized text

    def __len__(self) -> int: ...  # ids 0..len-1


@dataclass(frozen=True)
class Hypothesis:
    tokens: list[int]  # generated ids without the final eos
    score: float  # summed log-probability (eos included) / (len(tokens) + 1) ** lenpen
