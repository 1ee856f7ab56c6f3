from __future__ import annotations

import gzip
import re
from pathlib import Path

import pytest

from dynhat.data.corpus import (
    ParallelCorpus,
    read_lines,
    read_parallel,
    read_tsv,
    write_lines,
    write_parallel,
    write_tsv,
)
from dynhat.errors import DataError


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def test_plain_and_gzip_sides_are_read_line_aligned(tmp_path: Path) -> None:
    src = _write(tmp_path / "train.en.gz", "A dog runs.\nTwo men\u2028talk.\n".encode())
    tgt = _write(tmp_path / "train.de", b"Ein Hund rennt.\r\nZwei M\xc3\xa4nner reden.")  # CRLF, no final newline
    corpus = read_parallel(src, tgt)
    assert corpus == ParallelCorpus(["A dog runs.", "Two men\u2028talk."], ["Ein Hund rennt.", "Zwei Männer reden."],
                                    "en", "de", "train")
    assert len(corpus) == 2


def test_byte_order_mark_is_not_part_of_the_first_sentence(tmp_path: Path) -> None:
    assert read_lines(_write(tmp_path / "x.txt", "\ufeffEins\nZwei\n".encode())) == ["Eins", "Zwei"]


def test_tsv_pairs(tmp_path: Path) -> None:
    corpus = read_tsv(_write(tmp_path / "pairs.tsv.gz", b"one\teins\ntwo\tzwei\n"), "en", "de")
    assert (corpus.src, corpus.tgt, corpus.name) == (["one", "two"], ["eins", "zwei"], "pairs")


def test_missing_file_is_named(tmp_path: Path) -> None:
    _write(tmp_path / "a.de", b"x\n")
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'a.en'}: file not found")):
        read_parallel(tmp_path / "a.en", tmp_path / "a.de")


def test_different_line_counts_name_both_files_and_counts(tmp_path: Path) -> None:
    src = _write(tmp_path / "s.en", b"a\nb\nc\n")
    tgt = _write(tmp_path / "t.de.gz", b"x\ny\n")
    with pytest.raises(DataError) as info:
        read_parallel(src, tgt)
    assert f"{src} has 3 lines but {tgt} has 2" in str(info.value)


@pytest.mark.parametrize("name", ["empty.txt", "empty.txt.gz"])
def test_empty_file(tmp_path: Path, name: str) -> None:
    path = _write(tmp_path / name, b"")
    with pytest.raises(DataError, match=re.escape(f"{path}: file is empty")):
        read_lines(path)


@pytest.mark.parametrize("side", ["src", "tgt"])
def test_empty_line_on_one_side_names_file_and_line(tmp_path: Path, side: str) -> None:
    good, bad = b"a\nb\nc\n", b"a\n  \t\nc\n"
    src = _write(tmp_path / "s.en", bad if side == "src" else good)
    tgt = _write(tmp_path / "t.de", bad if side == "tgt" else good)
    with pytest.raises(DataError, match=re.escape(f"{src if side == 'src' else tgt}: line 2: empty sentence")):
        read_parallel(src, tgt)


@pytest.mark.parametrize("name", ["s.en", "s.en.gz"])
def test_undecodable_utf8_names_file_line_and_byte_offset(tmp_path: Path, name: str) -> None:
    path = _write(tmp_path / name, b"fine\nstill fine\nbad \xff here\n")
    with pytest.raises(DataError) as info:
        read_lines(path)
    message = str(info.value)
    assert message.startswith(f"{path}: line 3: undecodable bytes at byte 4 of the line (byte 20 ")
    assert "\\xff" in message and "UTF-8" in message


def test_truncated_utf8_sequence_at_end_of_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "s.txt", b"ok\nM\xc3")
    with pytest.raises(DataError, match=re.escape(f"{path}: line 2: undecodable bytes at byte 1 of the line")):
        read_lines(path)


def test_broken_gzip_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path / "s.en.gz", b"")
    path.write_bytes(b"this is not gzip")
    with pytest.raises(DataError, match=re.escape(f"{path}: not a readable gzip file")):
        read_lines(path)


@pytest.mark.parametrize(("line", "tabs"), [("no tab here", 0), ("a\tb\tc", 2)])
def test_tsv_line_without_exactly_one_tab(tmp_path: Path, line: str, tabs: int) -> None:
    path = _write(tmp_path / "p.tsv", f"one\teins\n{line}\n".encode())
    with pytest.raises(DataError, match=re.escape(f"{path}: line 2: expected 'source<TAB>target', found {tabs} tabs")):
        read_tsv(path)


@pytest.mark.parametrize(("line", "side"), [(" \teins", "source"), ("one\t", "target")])
def test_tsv_empty_side(tmp_path: Path, line: str, side: str) -> None:
    path = _write(tmp_path / "p.tsv", f"x\ty\n{line}\n".encode())
    with pytest.raises(DataError, match=re.escape(f"{path}: line 2: empty {side} sentence")):
        read_tsv(path)


def test_corpus_sides_must_have_equal_length() -> None:
    with pytest.raises(DataError, match="'toy': 2 source but 1 target"):
        ParallelCorpus(["a", "b"], ["x"], "en", "de", "toy")


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_write_parallel_round_trip_is_atomic_and_reproducible(tmp_path: Path, suffix: str) -> None:
    corpus = ParallelCorpus(["A dog.", "Zwei\u2028?"], ["Ein Hund.", "Two ü"], "en", "de", "toy")
    src, tgt = tmp_path / f"out/toy.en{suffix}", tmp_path / f"out/toy.de{suffix}"
    write_parallel(corpus, src, tgt)
    first = src.read_bytes()
    assert read_parallel(src, tgt, name="toy") == corpus
    write_parallel(corpus, src, tgt)
    assert src.read_bytes() == first  # gzip without a timestamp: same lines, same bytes
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted([src.name, tgt.name])  # no temp files


def test_write_tsv_round_trip(tmp_path: Path) -> None:
    corpus = ParallelCorpus(["one", "two"], ["eins", "zwei"], "en", "de", "pairs")
    write_tsv(corpus, tmp_path / "pairs.tsv")
    assert read_tsv(tmp_path / "pairs.tsv") == corpus


def test_writers_refuse_text_that_would_break_alignment(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"x\.txt: line 2 to write contains '\\n'"):
        write_lines(tmp_path / "x.txt", ["fine", "two\nlines"])
    corpus = ParallelCorpus(["a\tb"], ["c"], "en", "de", "t")
    with pytest.raises(DataError, match=r"p\.tsv: line 1 to write contains '\\t'"):
        write_tsv(corpus, tmp_path / "p.tsv")
    assert not list(tmp_path.iterdir())  # nothing written, not even half a file
