"""BLEU three ways, because a BLEU number is only comparable with numbers computed under the same convention.

- ``sacrebleu`` (the default, the number to report): sacreBLEU corpus BLEU on cased, detokenized text with its
  standard 13a tokenizer. It comes with sacreBLEU's signature string, which pins every setting, so anyone can
  reproduce it from the detokenized output alone.
- ``multi30k`` (the Multi30k literature's convention, e.g. WMT multimodal task papers): hypothesis and reference
  lowercased, punctuation-normalised and Moses-tokenized (German), then BLEU on the whitespace tokens. This is
  the pipeline behind the dataset's own ``data/task1/tok/*.lc.norm.tok.*`` files (``lowercase.perl |
  normalize-punctuation.perl | tokenizer.perl``), so the score is comparable with papers that score against those
  files. sacremoses stands in for the Moses perl scripts.
- ``hat`` (HAT's "normal" BLEU, ``configs/*/test.sh`` in the HAT repository): Moses-tokenized, cased text with
  intra-word hyphens split into ``##AT##-##AT##`` (the compound splitting of tensor2tensor/GNMT papers, which HAT
  applies to every task), then BLEU-4 on whitespace tokens like ``multi-bleu.perl``. Use it to set numbers next to
  HAT's tables; it rewards hyphenated compounds more than sacreBLEU does.

The two tokenized variants use no smoothing, like ``multi-bleu.perl``; sacreBLEU's default smooths with ``exp``.
That choice matters only when some n-gram order has no match at all (tiny or degenerate test sets).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from dynhat.errors import DataError

if TYPE_CHECKING:
    from sacremoses import MosesPunctNormalizer, MosesTokenizer

_HYPHEN = re.compile(r"(\S)-(\S)")
_ATAT = r"\1 ##AT##-##AT## \2"


@dataclass(frozen=True)
class BleuScores:
    """The three scores of one hypothesis set (0-100); ``signature`` is sacreBLEU's for ``sacrebleu``."""

    sacrebleu: float
    signature: str
    multi30k: float
    hat: float

    def as_dict(self) -> dict[str, float | str]:
        return {"sacrebleu": self.sacrebleu, "signature": self.signature, "multi30k": self.multi30k,
                "hat": self.hat}


@lru_cache(maxsize=8)
def _tokenizer(lang: str) -> MosesTokenizer:
    from sacremoses import MosesTokenizer

    return MosesTokenizer(lang=lang)


@lru_cache(maxsize=8)
def _normalizer(lang: str) -> MosesPunctNormalizer:
    from sacremoses import MosesPunctNormalizer

    return MosesPunctNormalizer(lang=lang)


def moses_tokenize(lines: Sequence[str], lang: str = "de", lowercase: bool = False,
                   normalise: bool = False) -> list[str]:
    """Moses tokenization (no XML escaping), optionally after lowercasing and punctuation normalisation.

    The order lowercase, normalise, tokenize is the one of the Multi30k ``*.lc.norm.tok.*`` files.
    """
    tok = _tokenizer(lang)
    norm = _normalizer(lang) if normalise else None
    out = []
    for line in lines:
        text = line.lower() if lowercase else line
        if norm is not None:
            text = norm.normalize(text)
        out.append(tok.tokenize(text, return_str=True, escape=False))
    return out


def split_compounds(line: str) -> str:
    """HAT's ``perl -ple 's{(\\S)-(\\S)}{$1 ##AT##-##AT## $2}g'``, exactly as perl applies it.

    One left-to-right pass without overlapping matches: in ``a-b-c`` the first match consumes ``b``, so the second
    hyphen stays (``a ##AT##-##AT## b-c``), which is what the perl one-liner produces and therefore what HAT's
    published numbers count. A second pass must not be added: it would match inside ``##AT##-##AT##`` itself
    (``#-#``) and mangle the markers.
    """
    return _HYPHEN.sub(_ATAT, line)


def _check(hypotheses: Sequence[str], references: Sequence[str]) -> None:
    if len(hypotheses) != len(references):
        raise DataError(f"BLEU: {len(hypotheses)} hypotheses but {len(references)} references; they must be "
                        "line-aligned")
    if not hypotheses:
        raise DataError("BLEU: no sentences to score")


def _tokenized_bleu(hypotheses: list[str], references: list[str]) -> float:
    from sacrebleu.metrics import BLEU

    metric = BLEU(tokenize="none", smooth_method="none", force=True)
    return float(metric.corpus_score(hypotheses, [references]).score)


def sacrebleu_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> tuple[float, str]:
    """sacreBLEU corpus BLEU on cased detokenized text, and its signature string."""
    from sacrebleu.metrics import BLEU

    _check(hypotheses, references)
    metric = BLEU()
    result = metric.corpus_score(list(hypotheses), [list(references)])
    return float(result.score), str(metric.get_signature())


def multi30k_bleu(hypotheses: Sequence[str], references: Sequence[str], lang: str = "de") -> float:
    """BLEU under the Multi30k convention (lowercased, normalised, Moses-tokenized); see the module docstring."""
    _check(hypotheses, references)
    return _tokenized_bleu(moses_tokenize(hypotheses, lang, lowercase=True, normalise=True),
                           moses_tokenize(references, lang, lowercase=True, normalise=True))


def hat_bleu(hypotheses: Sequence[str], references: Sequence[str], lang: str = "de") -> float:
    """HAT's "normal" BLEU (Moses-tokenized, compound-split, cased); see the module docstring."""
    _check(hypotheses, references)
    hyp = [split_compounds(line) for line in moses_tokenize(hypotheses, lang)]
    ref = [split_compounds(line) for line in moses_tokenize(references, lang)]
    return _tokenized_bleu(hyp, ref)


@dataclass(frozen=True)
class PairedBootstrap:
    """Two systems' sacreBLEU on the same sentences, with sacreBLEU's paired bootstrap resampling (Koehn, 2004):
    ``p_value``, how often resampled test sets, centred on no difference, show an absolute difference at least as
    large as the real one (two-sided); each score's 95 % confidence half-width (``*_ci``)."""

    baseline: float
    system: float
    p_value: float
    baseline_ci: float
    system_ci: float


def paired_bootstrap(baseline: Sequence[str], system: Sequence[str], references: Sequence[str],
                     samples: int = 1000) -> PairedBootstrap:
    """Whether ``system`` and ``baseline`` differ in sacreBLEU by more than the test set's sampling noise: a gap of
    a BLEU point on 1,000 sentences can be either. Resampling is seeded (sacreBLEU's ``SACREBLEU_SEED``, 12345 by
    default), so the figures repeat."""
    from sacrebleu.metrics import BLEU
    from sacrebleu.significance import PairedTest

    _check(baseline, references)
    _check(system, references)
    test = PairedTest([("baseline", list(baseline)), ("system", list(system))], {"BLEU": BLEU()},
                      [list(references)], test_type="bs", n_samples=samples)
    base, other = test()[1]["BLEU"]
    return PairedBootstrap(float(base.score), float(other.score), float(other.p_value), float(base.ci),
                           float(other.ci))


def score(hypotheses: Sequence[str], references: Sequence[str], lang: str = "de") -> BleuScores:
    """All three BLEU scores of detokenized ``hypotheses`` against one detokenized reference each."""
    value, signature = sacrebleu_bleu(hypotheses, references)
    return BleuScores(value, signature, multi30k_bleu(hypotheses, references, lang),
                      hat_bleu(hypotheses, references, lang))
