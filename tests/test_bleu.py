from __future__ import annotations

import pytest
import sacrebleu

from dynhat.errors import DataError
from dynhat.translate.bleu import (
    BleuScores,
    hat_bleu,
    moses_tokenize,
    multi30k_bleu,
    paired_bootstrap,
    score,
    split_compounds,
)

REFS = ["Ein Mann fährt ein rot-weißes Fahrrad.", "Zwei Kinder spielen im „Park“, nicht wahr?",
        "Eine Frau mit schwarzen Haaren liest ein Buch."]


def test_identical_text_scores_100_three_ways() -> None:
    result = score(REFS, REFS)
    assert isinstance(result, BleuScores)
    assert result.sacrebleu == pytest.approx(100) and result.multi30k == pytest.approx(100)
    assert result.hat == pytest.approx(100)


def test_sacrebleu_signature_is_returned() -> None:
    result = score(["Ein Mann fährt Rad."], ["Ein Mann fährt ein Rad."])
    assert result.signature == f"nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:{sacrebleu.__version__}"
    assert result.sacrebleu == pytest.approx(sacrebleu.corpus_bleu(["Ein Mann fährt Rad."],
                                                                   [["Ein Mann fährt ein Rad."]]).score)
    assert set(result.as_dict()) == {"sacrebleu", "signature", "multi30k", "hat"}


def test_compound_splitting_like_hats_perl_one_liner() -> None:
    assert split_compounds("rich-text format") == "rich ##AT##-##AT## text format"
    assert split_compounds("ein rot-weißes Auto - schnell") == "ein rot ##AT##-##AT## weißes Auto - schnell"
    # perl's s{(\S)-(\S)}{...}g does not re-match a character it consumed (checked against perl 5):
    assert split_compounds("a-b-c") == "a ##AT##-##AT## b-c"
    assert split_compounds("x--y") == "x ##AT##-##AT## -y"
    assert split_compounds("a-b c-d") == "a ##AT##-##AT## b c ##AT##-##AT## d"


def test_hat_bleu_counts_split_compounds_as_tokens() -> None:
    hyp, ref = ["Ein rot weißes Fahrrad ."], ["Ein rot-weißes Fahrrad."]
    expected = sacrebleu.corpus_bleu(["Ein rot weißes Fahrrad ."], [["Ein rot ##AT##-##AT## weißes Fahrrad ."]],
                                      tokenize="none", smooth_method="none", force=True).score
    assert hat_bleu(hyp, ref) == pytest.approx(expected)
    assert hat_bleu(["ein rot-weißes Fahrrad."], ref) < 100  # cased


def test_multi30k_convention_is_lowercased_normalised_and_tokenized() -> None:
    assert moses_tokenize(["Im „Park“, ja…"], "de", lowercase=True, normalise=True) == ['im " park " , ja ...']
    hyp = ["ein mann fährt ein rot-weißes fahrrad .", 'zwei kinder spielen im " park " , nicht wahr ?',
           "eine frau mit schwarzen haaren liest ein buch ."]
    assert multi30k_bleu(hyp, REFS) == pytest.approx(100)
    assert score(hyp, REFS).sacrebleu < 50


@pytest.mark.parametrize(("hyps", "refs", "message"), [(["a"], ["a", "b"], "1 hypotheses but 2 references"),
                                                       ([], [], "no sentences")])
def test_bad_input(hyps: list[str], refs: list[str], message: str) -> None:
    with pytest.raises(DataError, match=message):
        score(hyps, refs)


def test_paired_bootstrap_tells_a_real_gap_from_noise() -> None:
    words = ["ein", "mann", "eine", "frau", "zwei", "kinder", "ein", "hund", "spielt", "im", "park", "auf", "der",
             "straße", "mit", "einem", "ball"]
    refs = [" ".join(words[i % 7:i % 7 + 5]) + f" {i}." for i in range(200)]
    worse = [r if i % 4 else "ein Hund." for i, r in enumerate(refs)]
    other = [r if i % 4 != 1 else "ein Hund." for i, r in enumerate(refs)]  # as good, other sentences broken
    same = paired_bootstrap(worse, other, refs)
    assert abs(same.system - same.baseline) < 2 and same.p_value > 0.2
    better = paired_bootstrap(worse, refs, refs)
    assert better.system == pytest.approx(100) and better.baseline < better.system
    assert better.p_value < 0.01 and better.baseline_ci > 0
    with pytest.raises(DataError, match="199 hypotheses but 200 references"):
        paired_bootstrap(worse, refs[:-1], refs)
