from __future__ import annotations

import random

import pytest
import torch

from dynhat.model import ModelSettings, SuperTransformer, extract
from dynhat.space import load_space, sample
from dynhat.translate.beam import beam_search
from dynhat.translate.bleu import score, split_compounds
from dynhat.translate.translator import Translator

SPACE = load_space("multi30k-cpu")
VOCAB = 40
torch.manual_seed(0)
MODEL = SuperTransformer(SPACE, ModelSettings(vocab_size=VOCAB)).eval()
CONFIG = sample(SPACE, random.Random(4))


def _sources(seed: int, lengths: list[int]) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    src = torch.ones(len(lengths), max(lengths), dtype=torch.long)
    for i, n in enumerate(lengths):
        src[i, : n - 1] = torch.randint(4, VOCAB, (n - 1,), generator=gen)
        src[i, n - 1] = 2
    return src


def _model_score(src: torch.Tensor, tokens: list[int], lenpen: float) -> float:
    """Teacher-forced log-probability of tokens + eos, normalised as beam search does."""
    target = torch.tensor([[*tokens, 2]])
    prev = torch.tensor([[2, *tokens]])
    with torch.inference_mode():
        lp = torch.log_softmax(MODEL(src, prev, config=CONFIG), dim=-1)
    return float(lp.gather(-1, target.unsqueeze(-1)).sum()) / target.shape[1] ** lenpen


def test_beam_one_is_greedy() -> None:
    src = _sources(1, [7, 5, 9])
    greedy = MODEL.greedy(src, max_len=19, config=CONFIG)
    for row, hyp in enumerate(beam_search(MODEL, src, CONFIG, beam=1, max_len_a=0, max_len_b=19)):
        expected = [t for t in greedy[row].tolist() if t != 1]
        if expected and expected[-1] == 2:
            expected = expected[:-1]
        assert hyp.tokens == expected


def test_batching_does_not_change_results_and_scores_are_the_models() -> None:
    src = _sources(2, [6, 9, 4, 8])
    batched = beam_search(MODEL, src, CONFIG, beam=4, lenpen=0.6)
    for row in range(src.shape[0]):
        n = int(src[row].ne(1).sum())
        alone = beam_search(MODEL, src[row : row + 1, :n], CONFIG, beam=4, lenpen=0.6)[0]
        assert alone.tokens == batched[row].tokens
        assert alone.score == pytest.approx(_model_score(src[row : row + 1, :n], alone.tokens, 0.6), abs=1e-4)


def test_max_length_and_dense_equivalence() -> None:
    src = _sources(3, [5, 6])
    for hyp in beam_search(MODEL, src, CONFIG, beam=3, max_len_a=0.0, max_len_b=3):
        assert len(hyp.tokens) <= 3  # fairseq's convention: up to max_len tokens, then eos
    dense = extract(MODEL, CONFIG).eval()
    a = beam_search(MODEL, src, CONFIG, beam=3)
    b = beam_search(dense, src, None, beam=3)
    assert [h.tokens for h in a] == [h.tokens for h in b]


class LetterVocab:
    """Tiny stand-in vocabulary: one id per lowercase letter."""

    eos, pad = 2, 1

    def encode(self, text: str) -> list[int]:
        return [4 + (ord(c) - 97) % (VOCAB - 4) for c in text if c.isalpha()]

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(97 + i - 4) for i in ids if i >= 4)


def test_translator_keeps_order_and_handles_empty_input() -> None:
    translator = Translator(MODEL, LetterVocab(), CONFIG, beam=2, batch_sentences=2)
    sentences = ["abcdefg", "", "xyz", "hello world"]
    out = translator.translate(sentences)
    assert len(out) == 4 and out[1] == ""
    assert out[0] == translator.translate(["abcdefg"])[0]


def test_bleu_conventions() -> None:
    refs = ["Ein Mann fährt ein Fahrrad.", "Zwei Hunde spielen im Schnee-Park."]
    perfect = score(refs, refs)
    assert perfect.sacrebleu == pytest.approx(100) and perfect.multi30k == pytest.approx(100)
    assert perfect.hat == pytest.approx(100) and "nrefs:1" in perfect.signature
    assert split_compounds("Schnee-Park a-b-c") == "Schnee ##AT##-##AT## Park a ##AT##-##AT## b-c"
    lower = score([r.lower() for r in refs], refs)
    assert lower.multi30k == pytest.approx(100) and lower.sacrebleu < 100
    with pytest.raises(ValueError, match="2 references"):
        score(["x"], refs)
