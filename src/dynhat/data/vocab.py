"""Joint source/target subword vocabulary: sentencepiece BPE, kept as the serialized model bytes.

Why these choices:

- One joint vocabulary for both languages, because HAT ties the encoder embedding, decoder embedding and output
  projection (``share-all-embeddings``), which needs a single id space.
- fairseq's special ids (bos ``<s>`` 0, pad ``<pad>`` 1, eos ``</s>`` 2, unk ``<unk>`` 3), so padding and
  end-of-sentence mean the same in dynhat models and in HAT/fairseq checkpoints.
- The model is handled as bytes, so a training checkpoint can embed it and translate on its own, and a resumed run
  tokenizes exactly as the first one did.
- 8,000 pieces by default for Multi30k: 29k short captions (about 10k English and 18k German word types) are
  covered with ~14 pieces a sentence, inside the 5-10k range used for Multi30k in the literature; HAT's WMT'14
  models use 32k. Training takes about a second.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable, Sequence
from pathlib import Path

import sentencepiece as spm

from dynhat.errors import DataError
from dynhat.io import atomic_write

DEFAULT_VOCAB_SIZE = 8000
BOS, PAD, EOS, UNK = 0, 1, 2, 3
_SPECIALS = {"bos": (BOS, "<s>"), "pad": (PAD, "<pad>"), "eos": (EOS, "</s>"), "unk": (UNK, "<unk>")}


class FairseqIds:
    """fairseq's special ids (``<s>`` 0, ``<pad>`` 1, ``</s>`` 2, ``<unk>`` 3), which every dynhat vocabulary keeps,
    so models, batches and checkpoints agree whatever the tokenizer."""

    bos, pad, eos, unk = BOS, PAD, EOS, UNK


class Vocabulary(FairseqIds):
    """A sentencepiece model with fairseq's special ids; ``encode`` adds no bos/eos (the batcher appends eos)."""

    def __init__(self, model_bytes: bytes, source: str = "vocabulary bytes") -> None:
        self._bytes = bytes(model_bytes)
        self.sp = spm.SentencePieceProcessor()
        try:
            self.sp.LoadFromSerializedProto(self._bytes)
        except (RuntimeError, OSError, TypeError) as err:
            raise DataError(f"{source}: not a sentencepiece model ({err})") from None
        for name, (expected, piece) in _SPECIALS.items():
            actual = getattr(self.sp, f"{name}_id")()
            if actual != expected or self.sp.id_to_piece(expected) != piece:
                raise DataError(f"{source}: {name} must be {piece!r} with id {expected} (fairseq's layout) but the "
                                f"model has id {actual}; train it with dynhat.data.vocab.Vocabulary.train")

    @classmethod
    def train(cls, sentences: Iterable[str], vocab_size: int = DEFAULT_VOCAB_SIZE, *,
              character_coverage: float = 1.0, model_type: str = "bpe") -> Vocabulary:
        """Train on ``sentences`` (source and target concatenated), deterministically.

        Determinism: one thread, every sentence used in the given order (no sampling, no shuffling) and a fixed
        random seed, so the same data gives byte-identical models and therefore identical token ids.
        ``character_coverage=1.0`` keeps every character seen (German umlauts, accented names) out of ``<unk>``.
        """
        lines = [s for s in sentences if s.strip()]
        if not lines:
            raise DataError("vocabulary training: no non-empty sentences given")
        if vocab_size <= len(_SPECIALS):
            raise DataError(f"vocabulary training: vocab_size {vocab_size} must exceed the {len(_SPECIALS)} "
                            "special symbols")
        buffer = io.BytesIO()
        spm.set_random_generator_seed(1)
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(lines), model_writer=buffer, model_type=model_type, vocab_size=vocab_size,
                character_coverage=character_coverage, bos_id=BOS, pad_id=PAD, eos_id=EOS, unk_id=UNK,
                bos_piece="<s>", pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>",
                num_threads=1, input_sentence_size=0, shuffle_input_sentence=False, minloglevel=2,
            )
        except RuntimeError as err:
            raise DataError(f"vocabulary training on {len(lines)} sentences with vocab_size {vocab_size} "
                            f"failed: {err}") from None
        return cls(buffer.getvalue(), source="trained vocabulary")

    @classmethod
    def from_bytes(cls, model_bytes: bytes) -> Vocabulary:
        return cls(model_bytes)

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: vocabulary file not found")
        return cls(path.read_bytes(), source=str(path))

    def to_bytes(self) -> bytes:
        return self._bytes

    def save(self, path: str | Path) -> None:
        """Atomic, so a crash never leaves a truncated model that a later run would fail to load."""
        atomic_write(path, lambda handle: handle.write(self._bytes))

    @property
    def fingerprint(self) -> str:
        """Short SHA-256 of the model: tells whether two checkpoints tokenize the same way."""
        return hashlib.sha256(self._bytes).hexdigest()[:16]

    def __len__(self) -> int:
        return self.sp.get_piece_size()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and other._bytes == self._bytes

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Vocabulary(size={len(self)}, fingerprint={self.fingerprint})"

    def encode(self, text: str) -> list[int]:
        """Subword ids of one sentence, without bos or eos."""
        return self.sp.encode(text)

    def encode_lines(self, lines: Sequence[str]) -> list[list[int]]:
        """Ids of many sentences in one call (sentencepiece's batched path)."""
        return self.sp.encode(list(lines))

    def decode(self, ids: Iterable[int]) -> str:
        """Detokenized text of model output: stops at the first eos, skips bos and pad (accepts tensors)."""
        kept: list[int] = []
        size = len(self)
        for value in ids:
            i = int(value)
            if i == EOS:
                break
            if not 0 <= i < size:
                raise ValueError(f"token id {i} is outside the vocabulary (size {size})")
            if i not in (BOS, PAD):
                kept.append(i)
        return self.sp.decode(kept)
