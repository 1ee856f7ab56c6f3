"""Text in, text out: subword-encode, batch by length, beam search with a chosen SubTransformer, detokenize."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from dynhat.data.batching import pad_rows
from dynhat.model.seq2seq import Seq2SeqModel
from dynhat.space.config import SubTransformerConfig
from dynhat.translate.search import Hypothesis, beam_search


class TextVocabulary(Protocol):
    eos: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


@dataclass
class Translator:
    model: Seq2SeqModel
    vocab: TextVocabulary
    config: SubTransformerConfig | None = None
    beam: int = 4
    lenpen: float = 0.6
    max_len_a: float = 1.2
    max_len_b: int = 10
    batch_sentences: int = 64

    def hypotheses(self, sentences: list[str]) -> list[Hypothesis]:
        """Best hypothesis per sentence, in input order; empty input gives an empty hypothesis."""
        ids = [[*self.vocab.encode(s), self.vocab.eos] if s.strip() else [] for s in sentences]
        order = sorted((i for i in range(len(ids)) if ids[i]), key=lambda i: len(ids[i]))
        out: list[Hypothesis] = [Hypothesis([], 0.0)] * len(ids)
        for start in range(0, len(order), self.batch_sentences):
            chunk = order[start : start + self.batch_sentences]
            src = pad_rows([ids[i] for i in chunk])
            best = beam_search(self.model, src, self.config, self.beam, self.lenpen, self.max_len_a, self.max_len_b)
            for i, hyp in zip(chunk, best, strict=True):
                out[i] = hyp
        return out

    def translate(self, sentences: list[str]) -> list[str]:
        return [self.vocab.decode(h.tokens) for h in self.hypotheses(sentences)]
