"""Parallel corpora: two line-aligned text files (optionally gzipped) or one file of tab-separated pairs.

A misaligned corpus trains a model that looks fine and translates badly, so every check runs before anything is
used, and each error names the file, the line and what is wrong there.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dynhat.errors import DataError
from dynhat.io import atomic_write

_BOM = "\ufeff"


@dataclass(frozen=True)
class ParallelCorpus:
    """Sentence pairs kept as two aligned lists, the shape tokenizers and batchers consume."""

    src: list[str]
    tgt: list[str]
    src_lang: str
    tgt_lang: str
    name: str

    def __post_init__(self) -> None:
        if len(self.src) != len(self.tgt):
            raise DataError(f"corpus {self.name!r}: {len(self.src)} source but {len(self.tgt)} target sentences")

    def __len__(self) -> int:
        return len(self.src)


def _is_gzip(path: Path) -> bool:
    return path.suffix.lower() == ".gz"


def read_lines(path: str | Path) -> list[str]:
    """All lines of a UTF-8 file (``.gz`` decompressed), without line ends.

    Lines are split on ``\\n`` only (a trailing ``\\r`` is dropped): ``str.splitlines`` would also split on
    characters such as U+2028 inside a sentence and silently shift the alignment of every later line.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if not path.is_file():
        raise DataError(f"{path}: not a regular file")
    try:
        raw = path.read_bytes()
        if _is_gzip(path):
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        what = "not a readable gzip file" if _is_gzip(path) else "cannot be read"
        raise DataError(f"{path}: {what} ({err})") from None
    lines = decode_lines(raw, f"{path}", "of the decompressed file" if _is_gzip(path) else "of the file")
    if not lines:
        raise DataError(f"{path}: file is empty")
    return lines


def decode_lines(raw: bytes, source: str, where: str = "of the input") -> list[str]:
    """UTF-8 text split on ``\\n`` (a BOM and trailing ``\\r`` dropped); undecodable bytes are refused with their
    line, since a replacement character would reach the model as an unknown subword and go unnoticed."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        number = raw.count(b"\n", 0, err.start) + 1
        column = err.start - (raw.rfind(b"\n", 0, err.start) + 1)
        bad = raw[err.start:err.end]
        raise DataError(f"{source}: line {number}: undecodable bytes at byte {column} of the line (byte {err.start} "
                        f"{where}): {bad!r} is not valid UTF-8") from None
    if text.startswith(_BOM):
        text = text[len(_BOM):]
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _first_empty(lines: Sequence[str], path: Path) -> None:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            raise DataError(f"{path}: line {number}: empty sentence (every line must hold one sentence)")


def read_parallel(src_path: str | Path, tgt_path: str | Path, src_lang: str = "en", tgt_lang: str = "de",
                  name: str | None = None) -> ParallelCorpus:
    """A corpus from two line-aligned files; ``name`` defaults to the source file name up to its first dot."""
    src_path, tgt_path = Path(src_path), Path(tgt_path)
    src, tgt = read_lines(src_path), read_lines(tgt_path)
    _first_empty(src, src_path)
    _first_empty(tgt, tgt_path)
    if len(src) != len(tgt):
        raise DataError(f"misaligned corpus: {src_path} has {len(src)} lines but {tgt_path} has {len(tgt)}; "
                        "the two sides must have one sentence per line, in the same order")
    return ParallelCorpus(src, tgt, src_lang, tgt_lang, name or src_path.name.split(".")[0])


def read_tsv(path: str | Path, src_lang: str = "en", tgt_lang: str = "de", name: str | None = None) -> ParallelCorpus:
    """A corpus from one file with one ``source<TAB>target`` pair a line."""
    path = Path(path)
    src: list[str] = []
    tgt: list[str] = []
    for number, line in enumerate(read_lines(path), start=1):
        tabs = line.count("\t")
        if tabs != 1:
            raise DataError(f"{path}: line {number}: expected 'source<TAB>target', found {tabs} tabs")
        left, right = line.split("\t")
        for side, text in (("source", left), ("target", right)):
            if not text.strip():
                raise DataError(f"{path}: line {number}: empty {side} sentence")
        src.append(left)
        tgt.append(right)
    return ParallelCorpus(src, tgt, src_lang, tgt_lang, name or path.name.split(".")[0])


def _encode_lines(path: Path, lines: Sequence[str], forbidden: str = "\n") -> bytes:
    for index, line in enumerate(lines):
        for char in forbidden:
            if char in line:
                raise DataError(f"{path}: line {index + 1} to write contains {char!r}, which would break the "
                                "one-sentence-per-line alignment")
    data = "".join(f"{line}\n" for line in lines).encode("utf-8")
    # mtime=0: the same lines give the same bytes, so checksums of written files are reproducible.
    return gzip.compress(data, mtime=0) if _is_gzip(path) else data


def write_lines(path: str | Path, lines: Sequence[str]) -> None:
    """Write one line per item (gzipped for ``.gz``), atomically, so a reader never sees half a file."""
    path = Path(path)
    data = _encode_lines(path, lines)
    atomic_write(path, lambda handle: handle.write(data))


def write_parallel(corpus: ParallelCorpus, src_path: str | Path, tgt_path: str | Path) -> None:
    """Write both sides; each file is replaced atomically, and both are checked before either is written."""
    src_path, tgt_path = Path(src_path), Path(tgt_path)
    src, tgt = _encode_lines(src_path, corpus.src), _encode_lines(tgt_path, corpus.tgt)
    atomic_write(src_path, lambda handle: handle.write(src))
    atomic_write(tgt_path, lambda handle: handle.write(tgt))


def write_tsv(corpus: ParallelCorpus, path: str | Path) -> None:
    """Write ``source<TAB>target`` pairs atomically; a sentence holding a tab is refused (unreadable later)."""
    path = Path(path)
    _encode_lines(path, corpus.src, "\n\t")
    _encode_lines(path, corpus.tgt, "\n\t")
    data = _encode_lines(path, [f"{s}\t{t}" for s, t in zip(corpus.src, corpus.tgt, strict=True)])
    atomic_write(path, lambda handle: handle.write(data))
