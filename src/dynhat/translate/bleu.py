"""BLEU three ways, because Multi30k and HAT numbers are only comparable under their own conventions.

- ``sacrebleu``: cased, detokenized text, sacreBLEU's default 13a tokenizer: the number to report, with its
  signature.
- ``multi30k``: the Multi30k literature's convention: both sides punctuation-normalised, Moses-tokenized and
  lowercased (like the dataset's ``tok/*.lc.norm.tok.*`` files), then BLEU on whitespace tokens.
- ``hat``: HAT's "normal" BLEU: Moses-tokenized, intra-word hyphens split as ``##AT##-##AT##`` (tensor2tensor's
  compound splitting, which HAT applies to every task), case-sensitive BLEU on whitespace tokens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import sacrebleu
from sacremoses import MosesPunctNormalizer, MosesTokenizer

_HYPHEN = re.compile(r"(\S)-(\S)")


@dataclass(frozen=True)
class BleuScores:
    sacrebleu: float
    signature: str
    multi30k: float
    hat: float


def _moses(lines: list[str], lang: str, lowercase: bool, normalise: bool) -> list[str]:
    tok, norm = MosesTokenizer(lang=lang), MosesPunctNormalizer(lang=lang)
    out = []
    for line in lines:
        text = norm.normalize(line) if normalise else line
        text = tok.tokenize(text, return_str=True, escape=False)
        out.append(text.lower() if lowercase else text)
    return out


def split_compounds(line: str) -> str:
    """HAT's ``perl -ple 's{(\\S)-(\\S)}{$1 ##AT##-##AT## $2}g'``: one left-to-right pass, as perl does it
    (so in ``a-b-c`` the second hyphen stays, its left character having been consumed by the first match)."""
    return _HYPHEN.sub(r"\1 ##AT##-##AT## \2", line)


def score(hypotheses: list[str], references: list[str], lang: str = "de") -> BleuScores:
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    metric = sacrebleu.metrics.BLEU()
    default = metric.corpus_score(hypotheses, [references])
    plain = sacrebleu.metrics.BLEU(tokenize="none", force=True)
    m30k = plain.corpus_score(_moses(hypotheses, lang, True, True), [_moses(references, lang, True, True)])
    hat_h = [split_compounds(x) for x in _moses(hypotheses, lang, False, False)]
    hat_r = [split_compounds(x) for x in _moses(references, lang, False, False)]
    hat = plain.corpus_score(hat_h, [hat_r])
    return BleuScores(default.score, str(metric.get_signature()), m30k.score, hat.score)
