"""Text in, text out: subword-encode, batch by length, search with a chosen SubTransformer, detokenize."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from dynhat.errors import DataError
from dynhat.model.seq2seq import Seq2SeqModel
from dynhat.space.config import SubTransformerConfig
from dynhat.translate.beam import beam_search_nbest, greedy_search
from dynhat.translate.interface import DEFAULT_MAX_LEN_A, DEFAULT_MAX_LEN_B, Hypothesis, TextVocabulary


class Translator:
    """Translates lists of sentences with one model and one SubTransformer.

    Sentences are sorted by length and cut into batches of at most ``batch_tokens`` padded source tokens and
    ``batch_sentences`` sentences, so little work goes into padding; outputs come back in input order. It holds no
    per-call state, so one translator (or several on one model) may serve concurrent callers.
    """

    def __init__(self, model: Seq2SeqModel, vocab: TextVocabulary, config: SubTransformerConfig | None = None,
                 beam: int = 4, lenpen: float = 0.6, max_len_a: float = DEFAULT_MAX_LEN_A,
                 max_len_b: float = DEFAULT_MAX_LEN_B, batch_tokens: int = 4096, batch_sentences: int = 128,
                 unk_penalty: float = 0.0) -> None:
        if vocab.eos != model.eos_idx or vocab.pad != model.padding_idx:
            raise ValueError(f"vocabulary (eos {vocab.eos}, pad {vocab.pad}) and model (eos {model.eos_idx}, "
                             f"pad {model.padding_idx}) disagree on special ids")
        if beam < 1 or batch_tokens < 1 or batch_sentences < 1:
            raise ValueError("beam, batch_tokens and batch_sentences must be positive")
        self.model, self.vocab, self.config = model, vocab, config
        self.beam, self.lenpen, self.max_len_a, self.max_len_b = beam, lenpen, max_len_a, max_len_b
        self.batch_tokens, self.batch_sentences, self.unk_penalty = batch_tokens, batch_sentences, unk_penalty

    def translate(self, sentences: list[str]) -> list[str]:
        return [self.vocab.decode(h.tokens) for h in self.hypotheses(sentences)]

    def hypotheses(self, sentences: list[str]) -> list[Hypothesis]:
        """The best hypothesis (ids without eos, score) per sentence, in input order."""
        return self.hypotheses_of([self.vocab.encode(s) for s in sentences])

    def hypotheses_of(self, sources: Sequence[list[int]]) -> list[Hypothesis]:
        """``hypotheses`` of sentences already encoded (subword ids without eos), for a caller that needed the
        ids anyway (the runtime counts them to choose a point)."""
        return [hyps[0] for hyps in self.nbest_of(sources, 1)]

    def nbest(self, sentences: list[str], n: int) -> list[list[Hypothesis]]:
        """Up to ``n`` hypotheses per sentence (at most ``beam``), best first, in input order.

        A sentence with no subwords gets one empty hypothesis scored 0 without running the model: an empty
        source is outside what the model was trained on, and the empty translation is the sensible answer.
        """
        return self.nbest_of([self.vocab.encode(s) for s in sentences], n)

    def nbest_of(self, sources: Sequence[list[int]], n: int) -> list[list[Hypothesis]]:
        """``nbest`` of sentences already encoded."""
        self._check_lengths(sources)
        out: list[list[Hypothesis]] = [[Hypothesis([], 0.0)] for _ in sources]
        for batch in self._batches(sources):
            src = torch.full((len(batch), max(len(sources[i]) for i in batch) + 1), self.model.padding_idx,
                             dtype=torch.long, device=self._device())
            for row, i in enumerate(batch):
                src[row, : len(sources[i]) + 1] = torch.tensor([*sources[i], self.model.eos_idx])
            for i, hyps in zip(batch, self._search(src, n), strict=True):
                out[i] = hyps
        return out

    def _search(self, src: torch.Tensor, n: int) -> list[list[Hypothesis]]:
        if self.beam == 1:  # same result as beam 1, cheaper
            return [[h] for h in greedy_search(self.model, src, self.config, self.lenpen, self.max_len_a,
                                               self.max_len_b, self.unk_penalty)]
        return beam_search_nbest(self.model, src, self.config, self.beam, self.lenpen, self.max_len_a,
                                 self.max_len_b, self.unk_penalty, nbest=n)

    def _batches(self, sources: Sequence[list[int]]) -> list[list[int]]:
        """Indices of the non-empty sources, sorted by length and grouped under the batch limits."""
        order = sorted((i for i, s in enumerate(sources) if s), key=lambda i: (len(sources[i]), i))
        batches: list[list[int]] = []
        current: list[int] = []
        for i in order:
            width = len(sources[i]) + 1  # sorted, so the newest sentence is the widest
            if current and (width * (len(current) + 1) > self.batch_tokens or len(current) == self.batch_sentences):
                batches.append(current)
                current = []
            current.append(i)
        if current:
            batches.append(current)
        return batches

    def _check_lengths(self, sources: Sequence[list[int]]) -> None:
        """Fail clearly on a sentence the encoder cannot number, rather than deep inside an embedding look-up."""
        capacity = self.model.weights(self.config).encoder_positions.shape[0] - self.model.padding_idx - 1
        for i, s in enumerate(sources):
            if len(s) + 1 > capacity:
                raise DataError(f"sentence {i + 1} (line {i + 1} of the input) has {len(s)} subwords; the model reads "
                                f"at most {capacity - 1}: split it")

    def _device(self) -> torch.device:
        return self.model.weights(self.config).encoder_embed.device
