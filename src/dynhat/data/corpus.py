"""Parallel corpora from plain text (one sentence a line, optionally gzipped) or tab-separated pairs.

Every problem is reported with the file, the line and what is wrong, before anything is used or written.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

from dynhat.errors import DataError
from dynhat.io import atomic_write


@dataclass(frozen=True)
class ParallelCorpus:
    src: list[str]
    tgt: list[str]
    src_lang: str
    tgt_lang: str
    name: str

    def __len__(self) -> int:
        return len(self.src)


def read_lines(path: str | Path) -> list[str]:
    """Lines of a UTF-8 text file (``.gz`` decompressed), without line ends; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as err:
        raise DataError(f"{path}: not a readable gzip file ({err})") from None
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if not lines:
        raise DataError(f"{path}: file is empty")
    out = []
    for number, line in enumerate(lines, start=1):
        try:
            out.append(line.decode("utf-8").rstrip("\r"))
        except UnicodeDecodeError as err:
            raise DataError(f"{path}: line {number}: undecodable bytes at byte {err.start} of the line "
                            f"({line[err.start:err.start + 4]!r}); expected UTF-8") from None
    return out


def _check_nonempty(lines: list[str], path: Path) -> None:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            raise DataError(f"{path}: line {number}: empty sentence")


def read_parallel(src_path: str | Path, tgt_path: str | Path, src_lang: str = "en", tgt_lang: str = "de",
                  name: str | None = None) -> ParallelCorpus:
    src_path, tgt_path = Path(src_path), Path(tgt_path)
    src, tgt = read_lines(src_path), read_lines(tgt_path)
    if len(src) != len(tgt):
        raise DataError(f"misaligned corpus: {src_path} has {len(src)} lines but {tgt_path} has {len(tgt)}")
    _check_nonempty(src, src_path)
    _check_nonempty(tgt, tgt_path)
    return ParallelCorpus(src, tgt, src_lang, tgt_lang, name or src_path.name.split(".")[0])


def read_tsv(path: str | Path, src_lang: str = "en", tgt_lang: str = "de") -> ParallelCorpus:
    """One pair a line, source and target separated by exactly one tab."""
    path = Path(path)
    src, tgt = [], []
    for number, line in enumerate(read_lines(path), start=1):
        parts = line.split("\t")
        if len(parts) != 2:
            raise DataError(f"{path}: line {number}: expected 'source<TAB>target', found {len(parts) - 1} tabs")
        if not parts[0].strip() or not parts[1].strip():
            raise DataError(f"{path}: line {number}: empty {'source' if not parts[0].strip() else 'target'}")
        src.append(parts[0])
        tgt.append(parts[1])
    return ParallelCorpus(src, tgt, src_lang, tgt_lang, path.name.split(".")[0])


def write_lines(path: str | Path, lines: list[str]) -> None:
    """Atomic: a reader never sees half a file."""
    data = "".join(f"{line}\n" for line in lines).encode("utf-8")
    atomic_write(path, lambda handle: handle.write(gzip.compress(data, mtime=0) if str(path).endswith(".gz")
                                                   else data))
