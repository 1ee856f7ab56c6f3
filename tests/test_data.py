from __future__ import annotations

import gzip
import shutil

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dynhat.data.batching import TokenBatcher
from dynhat.data.corpus import read_lines, read_parallel, read_tsv, write_lines
from dynhat.data.fetch import FILES, fetch_multi30k, load_multi30k
from dynhat.data.vocab import Vocabulary
from dynhat.errors import DataError


def test_plain_and_gzip_and_tsv(tmp_path) -> None:
    write_lines(tmp_path / "a.en.gz", ["one", "two"])
    write_lines(tmp_path / "a.de", ["eins", "zwei"])
    corpus = read_parallel(tmp_path / "a.en.gz", tmp_path / "a.de")
    assert corpus.src == ["one", "two"] and corpus.tgt == ["eins", "zwei"] and len(corpus) == 2
    (tmp_path / "p.tsv").write_text("one\teins\ntwo\tzwei\n")
    assert read_tsv(tmp_path / "p.tsv").tgt == ["eins", "zwei"]


@pytest.mark.parametrize(
    ("src", "tgt", "message"),
    [
        (b"a\nb\n", b"x\n", r"misaligned corpus: .*s\.txt has 2 lines but .*t\.txt has 1"),
        (b"", b"", r"s\.txt: file is empty"),
        (b"a\n\xffb\n", b"x\ny\n", r"s\.txt: line 2: undecodable bytes at byte 0"),
        (b"a\n \n", b"x\ny\n", r"s\.txt: line 2: empty sentence"),
    ],
)
def test_corpus_errors_name_file_and_line(tmp_path, src, tgt, message) -> None:
    (tmp_path / "s.txt").write_bytes(src)
    (tmp_path / "t.txt").write_bytes(tgt)
    with pytest.raises(DataError, match=message):
        read_parallel(tmp_path / "s.txt", tmp_path / "t.txt")


def test_tsv_and_gzip_errors(tmp_path) -> None:
    (tmp_path / "p.tsv").write_text("one\teins\ntwo zwei\n")
    with pytest.raises(DataError, match=r"p\.tsv: line 2: expected 'source<TAB>target', found 0 tabs"):
        read_tsv(tmp_path / "p.tsv")
    (tmp_path / "bad.gz").write_bytes(b"not gzip")
    with pytest.raises(DataError, match=r"bad\.gz: not a readable gzip file"):
        read_lines(tmp_path / "bad.gz")
    with pytest.raises(DataError, match="file not found"):
        read_lines(tmp_path / "missing.txt")


@pytest.mark.shared_data
def test_fetch_from_mirror_verifies_every_file(data_dir, tmp_path) -> None:
    root = fetch_multi30k(tmp_path, mirror=data_dir / "multi30k", progress=False)
    assert sorted(p.name for p in root.iterdir()) == sorted(FILES)
    assert len(load_multi30k("train", root)) == 29000 and len(load_multi30k("val", root)) == 1014


@pytest.mark.shared_data
def test_corrupt_mirror_file_is_rejected_and_not_kept(data_dir, tmp_path) -> None:
    mirror = tmp_path / "mirror"
    shutil.copytree(data_dir / "multi30k", mirror)
    with gzip.open(mirror / "val.de.gz", "ab") as handle:
        handle.write(b"extra line\n")
    with pytest.raises(DataError, match=r"val\.de\.gz: size .* expected 24681; the file was not kept"):
        fetch_multi30k(tmp_path / "cache", mirror=mirror, progress=False)
    assert not (tmp_path / "cache" / "multi30k" / "val.de.gz").exists()
    assert not list((tmp_path / "cache" / "multi30k").glob(".*tmp*"))


def test_vocabulary_round_trip_and_specials(tmp_path) -> None:
    sentences = [f"the cat number {i} sits on the mat number {i * 7}." for i in range(300)]
    vocab = Vocabulary.train(sentences, 120)
    assert len(vocab) == 120 and (vocab.bos, vocab.pad, vocab.eos, vocab.unk) == (0, 1, 2, 3)
    assert vocab.sp.id_to_piece(1) == "<pad>" and vocab.sp.id_to_piece(2) == "</s>"
    ids = vocab.encode(sentences[5])
    assert vocab.decode([*ids, vocab.eos, 9, 9]) == sentences[5]
    vocab.save(tmp_path / "v.model")
    again = Vocabulary.load(tmp_path / "v.model")
    assert again.encode(sentences[7]) == vocab.encode(sentences[7])
    assert Vocabulary.train(sentences, 120).to_bytes() == vocab.to_bytes()  # deterministic


@settings(max_examples=30, deadline=None)
@given(lengths=st.lists(st.tuples(st.integers(1, 40), st.integers(1, 40)), min_size=1, max_size=80),
       max_tokens=st.integers(64, 400), seed=st.integers(0, 99))
def test_batches_respect_budget_and_cover_each_pair_once(lengths, max_tokens, seed) -> None:
    src = [[5] * s for s, _ in lengths]
    tgt = [[6] * t for _, t in lengths]
    batcher = TokenBatcher(src, tgt, max_tokens, seed=seed, max_positions=41)
    epoch = batcher.epoch(0)
    seen = sorted(i for b in epoch for i in b.indices)
    assert seen == list(range(len(lengths)))
    for b in epoch:
        assert b.src_tokens.numel() <= max_tokens or len(b.indices) == 1
        assert b.target.numel() <= max_tokens or len(b.indices) == 1
        assert b.ntokens == int(b.target.ne(1).sum())
        assert (b.prev_output_tokens[:, 0] == 2).all()
    assert [b.indices for b in batcher.epoch(0)] == [b.indices for b in epoch]


def test_epoch_order_changes_and_long_pairs_are_counted() -> None:
    src = [[5] * (i % 30 + 1) for i in range(200)] + [[5] * 300]
    tgt = [[6] * (i % 25 + 1) for i in range(200)] + [[6] * 3]
    batcher = TokenBatcher(src, tgt, 100, seed=3, max_positions=256)
    assert batcher.dropped == 1
    assert [b.indices for b in batcher.epoch(0)] != [b.indices for b in batcher.epoch(1)]
