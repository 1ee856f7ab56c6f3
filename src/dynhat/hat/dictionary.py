"""fairseq's ``dict.<lang>.txt``: the symbol table of a HAT checkpoint.

Ids are positions: ``<s>`` 0, ``<pad>`` 1, ``</s>`` 2, ``<unk>`` 3 are implicit (fairseq never writes them), then
one ``symbol count`` line per symbol in file order. The embedding row of a symbol is its id, so reading the lines
in any other order, or skipping one, would silently pair every later word with another word's vector.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from dynhat.errors import DataError
from dynhat.io import atomic_write_text, read_text

SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")
BOS, PAD, EOS, UNK = range(len(SPECIALS))


class FairseqDictionary:
    """Symbols and counts in fairseq's order; unknown words map to ``<unk>``."""

    def __init__(self, symbols: Sequence[str], counts: Sequence[int] | None = None,
                 source: str = "dictionary") -> None:
        counts = [0] * len(symbols) if counts is None else list(counts)
        if len(counts) != len(symbols):
            raise DataError(f"{source}: {len(symbols)} symbols but {len(counts)} counts")
        self._symbols = [*SPECIALS, *symbols]
        self._counts = [0] * len(SPECIALS) + counts
        self._index: dict[str, int] = {}
        for i, symbol in enumerate(self._symbols):
            if not symbol or "\n" in symbol or "\r" in symbol:
                raise DataError(f"{source}: symbol {i} ({symbol!r}) is empty or holds a line break; fairseq's "
                                "format cannot store it")
            if symbol in self._index:
                raise DataError(f"{source}: symbol {symbol!r} appears twice (ids {self._index[symbol]} and {i})")
            self._index[symbol] = i

    @classmethod
    def from_text(cls, text: str, source: str = "dictionary") -> FairseqDictionary:
        """Parse fairseq 0.8's format: the count is the text after the last space of each line."""
        ids = {s: i for i, s in enumerate(SPECIALS)}
        counts: list[int] = []
        lines = text.split("\n")  # not splitlines(): a symbol may hold other Unicode line separators
        if lines[-1] == "":
            lines.pop()  # the newline that ends the last line
        for number, line in enumerate(lines, start=1):
            symbol, _, count = line.rstrip("\r").rpartition(" ")
            if not symbol or not count.isdigit():
                raise DataError(f"{source}: line {number}: expected '<symbol> <count>', got {line!r}")
            if symbol in ids:
                raise DataError(f"{source}: line {number}: symbol {symbol!r} already has id {ids[symbol]}")
            ids[symbol] = len(ids)
            counts.append(int(count))
        return cls(list(ids)[len(SPECIALS):], counts, source)

    @classmethod
    def load(cls, path: str | Path) -> FairseqDictionary:
        return cls.from_text(read_text(path, "dictionary file not found"), source=str(path))

    def to_text(self) -> str:
        """The file fairseq's ``Dictionary.save`` writes: every symbol after the four special ones."""
        return "".join(f"{s} {c}\n" for s, c in zip(self._symbols[len(SPECIALS):], self._counts[len(SPECIALS):],
                                                     strict=True))

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, self.to_text())

    def __len__(self) -> int:
        return len(self._symbols)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FairseqDictionary) and other._symbols == self._symbols

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"FairseqDictionary(size={len(self)})"

    @property
    def symbols(self) -> list[str]:
        return list(self._symbols)

    def index(self, symbol: str) -> int:
        return self._index.get(symbol, UNK)

    def encode(self, symbols: Iterable[str]) -> list[int]:
        return [self.index(s) for s in symbols]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Symbols of model output: stops at the first eos, skips bos and pad (accepts tensors)."""
        out: list[str] = []
        for value in ids:
            i = int(value)
            if i == EOS:
                break
            if not 0 <= i < len(self._symbols):
                raise ValueError(f"token id {i} is outside the dictionary (size {len(self)})")
            if i not in (BOS, PAD):
                out.append(self._symbols[i])
        return out
