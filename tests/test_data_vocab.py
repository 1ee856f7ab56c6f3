from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
import sentencepiece as spm
import torch

from dynhat.cli import main
from dynhat.data.corpus import write_lines
from dynhat.data.fetch import load_multi30k, shared_data_dir
from dynhat.data.vocab import DEFAULT_VOCAB_SIZE, Vocabulary
from dynhat.errors import DataError

SENTENCES = [f"The {c} cat number {i} sits on the mat, doesn't it? Die Katze Nr. {i} sitzt {c}."
             for i in range(120) for c in ("red", "green", "grüne")]


@pytest.fixture(scope="module")
def vocab() -> Vocabulary:
    return Vocabulary.train(SENTENCES, 150)


def test_special_ids_are_fairseqs(vocab: Vocabulary) -> None:
    assert (vocab.bos, vocab.pad, vocab.eos, vocab.unk) == (0, 1, 2, 3)
    assert vocab.sp.id_to_piece([0, 1, 2, 3]) == ["<s>", "<pad>", "</s>", "<unk>"]
    assert len(vocab) == 150


def test_encode_adds_no_specials_and_decode_round_trips(vocab: Vocabulary) -> None:
    ids = vocab.encode(SENTENCES[7])
    assert ids and not set(ids) & {0, 1, 2}
    assert vocab.decode(ids) == SENTENCES[7]
    assert vocab.encode_lines(SENTENCES[:3]) == [vocab.encode(s) for s in SENTENCES[:3]]


def test_decode_stops_at_eos_and_skips_bos_and_pad(vocab: Vocabulary) -> None:
    ids = vocab.encode(SENTENCES[4])
    assert vocab.decode([0, *ids[:2], 1, *ids[2:], 2, *ids, 1, 1]) == SENTENCES[4]
    assert vocab.decode(torch.tensor([*ids, 2, 1])) == SENTENCES[4]
    assert vocab.decode([2, *ids]) == ""
    with pytest.raises(ValueError, match="token id 150 is outside the vocabulary"):
        vocab.decode([150])


def test_bytes_and_file_round_trip(vocab: Vocabulary, tmp_path: Path) -> None:
    assert Vocabulary.from_bytes(vocab.to_bytes()) == vocab
    vocab.save(tmp_path / "sub" / "vocab.model")
    again = Vocabulary.load(tmp_path / "sub" / "vocab.model")
    assert again == vocab and again.encode(SENTENCES[9]) == vocab.encode(SENTENCES[9])
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["vocab.model"]


def test_training_is_deterministic(vocab: Vocabulary) -> None:
    again = Vocabulary.train(list(SENTENCES), 150)
    assert again.to_bytes() == vocab.to_bytes() and again.fingerprint == vocab.fingerprint


def test_bad_models_and_training_input_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'v.model'}: vocabulary file not found")):
        Vocabulary.load(tmp_path / "v.model")
    (tmp_path / "v.model").write_bytes(b"not a model")
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'v.model'}: not a sentencepiece model")):
        Vocabulary.load(tmp_path / "v.model")
    with pytest.raises(DataError, match=r"vocab_size 5000 failed: .*<= "):
        Vocabulary.train(SENTENCES, 5000)
    with pytest.raises(DataError, match="no non-empty sentences"):
        Vocabulary.train(["", "  "], 100)


def test_model_with_other_special_ids_is_rejected() -> None:
    buffer = io.BytesIO()  # sentencepiece's own defaults: unk 0, bos 1, eos 2, no pad
    spm.SentencePieceTrainer.train(sentence_iterator=iter(SENTENCES), model_writer=buffer, vocab_size=100,
                                   model_type="bpe", minloglevel=2, num_threads=1)
    with pytest.raises(DataError, match=r"bos must be '<s>' with id 0 .*fairseq"):
        Vocabulary(buffer.getvalue())


def test_cli_vocab(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_lines(tmp_path / "train.en", [s.split(" Die ")[0] for s in SENTENCES])
    write_lines(tmp_path / "train.de.gz", ["Die " + s.split(" Die ")[1] for s in SENTENCES])
    out = tmp_path / "vocab.model"
    args = ["data", "vocab", "--train-src", str(tmp_path / "train.en"), "--train-tgt", str(tmp_path / "train.de.gz"),
            "--size", "120", "--out", str(out)]
    assert main(args) == 0
    assert f"{out}: 120 pieces from 360 sentence pairs" in capsys.readouterr().out
    assert len(Vocabulary.load(out)) == 120
    write_lines(tmp_path / "train.de.gz", ["Die Katze."])
    assert main(args) == 2
    assert "has 360 lines but" in capsys.readouterr().err


@pytest.mark.shared_data
def test_real_multi30k_vocabulary() -> None:
    root = shared_data_dir() / "multi30k"
    if not root.is_dir():
        pytest.skip(f"real Multi30k files not found at {root} (set DYNHAT_DATA)")
    train = load_multi30k("train", root)
    vocab = Vocabulary.train(train.src + train.tgt, DEFAULT_VOCAB_SIZE)
    assert len(vocab) == DEFAULT_VOCAB_SIZE
    test = load_multi30k("test_2016_flickr", root)
    for sentence in (test.src[0], test.tgt[0], "Zwei Männer überqueren die Straße."):
        ids = vocab.encode(sentence)
        assert vocab.unk not in ids and vocab.decode([*ids, vocab.eos]) == sentence
    pieces = sum(len(ids) for ids in vocab.encode_lines(test.tgt)) / len(test)
    assert pieces < 20  # captions of ~11 words stay short: most words are one piece
