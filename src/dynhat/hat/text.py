"""HAT's text pipeline around a fairseq dictionary: Moses tokenization, subword-nmt BPE, and back.

HAT's WMT models were trained on text that went through Moses' ``tokenizer.perl`` (XML-escaping ``&``, quotes and
apostrophes, as the perl script does by default) and subword-nmt BPE (``@@`` marks a subword that continues);
translations are turned back into text as HAT's ``test.sh`` does: drop the ``@@ `` markers (fairseq's
``--remove-bpe``), then Moses-detokenize. ``sacremoses`` stands in for the perl scripts and the ``subword-nmt``
package applies the codes. A model sees different ids for the same sentence if any step differs, so the settings
travel with the converted checkpoint.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from functools import cached_property
from typing import TYPE_CHECKING, Any

from dynhat.data.vocab import FairseqIds
from dynhat.errors import DataError
from dynhat.hat.dictionary import FairseqDictionary

if TYPE_CHECKING:
    from sacremoses import MosesDetokenizer, MosesTokenizer
    from subword_nmt.apply_bpe import BPE

BPE_SEPARATOR = "@@"


def check_bpe_codes(text: str, source: str) -> None:
    """Fail on a line subword-nmt would reject (it calls ``sys.exit`` instead of raising)."""
    lines = text.rstrip("\n").split("\n")
    first = 1 if lines and lines[0].startswith("#version:") else 0
    if first == len(lines) or lines[first:] == [""]:
        raise DataError(f"{source}: no merge operations (expected one 'left right' pair a line)")
    for number, line in enumerate(lines[first:], start=first + 1):
        if len(line.strip("\r\n ").split(" ")) != 2:
            raise DataError(f"{source}: line {number}: expected two subword units separated by one space, "
                            f"got {line!r}")


class HatVocabulary(FairseqIds):
    """Text <-> ids with a fairseq dictionary; the vocabulary interface the translator, runtime and service use.

    ``bpe_codes`` is the text of a subword-nmt codes file, or None for a dictionary of whole Moses tokens.
    Source text is tokenized with ``source_lang``'s rules, translations detokenized with ``target_lang``'s.
    ``aggressive_dash_splits`` is Moses' ``-a`` (HAT's WMT'14 En-Fr data used it, its En-De data did not).
    """

    def __init__(self, dictionary: FairseqDictionary, bpe_codes: str | None = None, source_lang: str = "en",
                 target_lang: str = "de", aggressive_dash_splits: bool = False,
                 source: str = "BPE codes") -> None:
        if bpe_codes is not None:
            check_bpe_codes(bpe_codes, source)
        self.dictionary = dictionary
        self.bpe_codes = bpe_codes
        self.source_lang, self.target_lang = source_lang, target_lang
        self.aggressive_dash_splits = aggressive_dash_splits

    # ------------------------------------------------------------------ checkpoint storage
    def to_state(self) -> dict[str, Any]:
        """Plain values only, so a checkpoint holding them loads with ``weights_only=True``."""
        return {"dictionary": self.dictionary.to_text(), "bpe_codes": self.bpe_codes,
                "source_lang": self.source_lang, "target_lang": self.target_lang,
                "aggressive_dash_splits": self.aggressive_dash_splits}

    @classmethod
    def from_state(cls, state: dict[str, Any], source: str) -> HatVocabulary:
        try:
            return cls(FairseqDictionary.from_text(state["dictionary"], f"{source}: vocab.dictionary"),
                       state["bpe_codes"], state["source_lang"], state["target_lang"],
                       state["aggressive_dash_splits"], source=f"{source}: vocab.bpe_codes")
        except (KeyError, TypeError) as err:
            raise DataError(f"{source}: vocab: expected a mapping with dictionary, bpe_codes, source_lang, "
                            f"target_lang and aggressive_dash_splits ({err!r} is missing or malformed)") from None

    # ------------------------------------------------------------------ the vocabulary interface
    def __len__(self) -> int:
        return len(self.dictionary)

    def __repr__(self) -> str:
        bpe = "subword-nmt BPE" if self.bpe_codes is not None else "no BPE"
        return f"HatVocabulary(size={len(self)}, {bpe}, {self.source_lang}->{self.target_lang})"

    def tokenize(self, text: str) -> list[str]:
        """The subword strings HAT's model would read for ``text`` (Moses, then BPE when there are codes)."""
        tokens = self._tokenizer.tokenize(text, aggressive_dash_splits=self.aggressive_dash_splits,
                                          return_str=True, escape=True)
        if self._bpe is not None:
            tokens = self._bpe.process_line(tokens)
        return tokens.split()

    def encode(self, text: str) -> list[int]:
        """Dictionary ids of one sentence, without eos (the translator appends it)."""
        return self.dictionary.encode(self.tokenize(text))

    def decode(self, ids: Iterable[int]) -> str:
        """Text of model output: stops at eos, joins subwords (``--remove-bpe``), Moses-detokenizes."""
        joined = (" ".join(self.dictionary.decode(ids)) + " ").replace(f"{BPE_SEPARATOR} ", "").rstrip()
        return self._detokenizer.detokenize(joined.split(), unescape=True)

    @cached_property
    def _tokenizer(self) -> MosesTokenizer:
        from sacremoses import MosesTokenizer

        return MosesTokenizer(lang=self.source_lang)

    @cached_property
    def _detokenizer(self) -> MosesDetokenizer:
        from sacremoses import MosesDetokenizer

        return MosesDetokenizer(lang=self.target_lang)

    @cached_property
    def _bpe(self) -> BPE | None:
        if self.bpe_codes is None:
            return None
        from subword_nmt.apply_bpe import BPE

        return BPE(io.StringIO(self.bpe_codes), separator=BPE_SEPARATOR)
