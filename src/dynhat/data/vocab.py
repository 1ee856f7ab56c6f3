"""Joint source/target subword vocabulary (sentencepiece BPE), stored inside checkpoints as bytes.

Special ids are fairseq's (bos 0, pad 1, eos 2, unk 3), so HAT checkpoints and dynhat models agree on them.
8,000 joint pieces suit Multi30k (29k short captions; the literature uses 5-10k); HAT uses 32k for WMT.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path

import sentencepiece as spm

from dynhat.errors import DataError
from dynhat.io import atomic_write

DEFAULT_SIZE = 8000


class Vocabulary:
    bos, pad, eos, unk = 0, 1, 2, 3

    def __init__(self, model_bytes: bytes) -> None:
        self._bytes = model_bytes
        self.sp = spm.SentencePieceProcessor(model_proto=model_bytes)

    @classmethod
    def train(cls, sentences: Iterable[str], vocab_size: int = DEFAULT_SIZE) -> Vocabulary:
        """Deterministic BPE on the given sentences (single thread, fixed input order)."""
        buffer = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(list(sentences)), model_writer=buffer, model_type="bpe",
                vocab_size=vocab_size, character_coverage=1.0, bos_id=0, pad_id=1, eos_id=2, unk_id=3,
                num_threads=1, input_sentence_size=0, shuffle_input_sentence=False, minloglevel=2,
            )
        except RuntimeError as err:
            raise DataError(f"subword training failed: {err}") from None
        return cls(buffer.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        return cls(Path(path).read_bytes())

    def to_bytes(self) -> bytes:
        return self._bytes

    def save(self, path: str | Path) -> None:
        atomic_write(path, lambda handle: handle.write(self._bytes))

    def __len__(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text)

    def decode(self, ids: Iterable[int]) -> str:
        """Detokenized text; stops at eos, skips bos and pad."""
        out = []
        for i in ids:
            if i == self.eos:
                break
            if i not in (self.bos, self.pad):
                out.append(int(i))
        return self.sp.decode(out)
