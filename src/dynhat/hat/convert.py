"""Whole-model moves between HAT and dynhat: ``dynhat convert`` and ``dynhat export-hat``.

A converted checkpoint is a dynhat checkpoint (``dynhat.inference.checkpoint``) with the model, its design space, the
dropout settings and the vocabulary (``vocab_kind: fairseq``); it has no training state, so every command that
reads a trained model takes it, and training does not resume from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dynhat.data.vocab import Vocabulary
from dynhat.errors import DataError
from dynhat.hat.checkpoint import HatCheckpoint, load_hat_checkpoint, save_hat_checkpoint
from dynhat.hat.dictionary import SPECIALS, FairseqDictionary
from dynhat.hat.text import HatVocabulary
from dynhat.inference.checkpoint import load_trained, model_fields, save_checkpoint
from dynhat.io import atomic_write_text
from dynhat.space import SubTransformerConfig, resolve_config


@dataclass(frozen=True)
class Converted:
    """What ``convert_hat`` read and wrote."""

    hat: HatCheckpoint
    vocab: HatVocabulary
    checkpoint: Path
    space_yaml: Path
    subtransformer_yaml: Path | None


def convert_hat(hat_path: str | Path, dictionary: str | Path, out: str | Path, bpe_codes: str | Path | None = None,
                source_lang: str | None = None, target_lang: str | None = None,
                aggressive_dash_splits: bool = False) -> Converted:
    """Write a HAT checkpoint and its dictionary (+ BPE codes) as one self-contained dynhat checkpoint.

    The languages default to the checkpoint's ``source_lang``/``target_lang``. The design space is also written
    beside ``out`` as ``<out>.space.yml`` (for ``dynhat latency collect --space``) and, for a SubTransformer
    checkpoint, its configuration as ``<out>.subtransformer.yml`` (for ``--config``).
    """
    hat = load_hat_checkpoint(hat_path)
    table = FairseqDictionary.load(dictionary)
    if len(table) != hat.model.settings.vocab_size:
        raise DataError(f"{dictionary}: {len(table)} symbols (4 special + {len(table) - len(SPECIALS)} lines) but "
                        f"the embedding of {hat_path} has {hat.model.settings.vocab_size} rows; use the dictionary "
                        "the model was trained with")
    codes = _read_text(bpe_codes, "BPE codes") if bpe_codes is not None else None
    vocab = HatVocabulary(table, codes, source_lang or hat.source_lang or "en", target_lang or hat.target_lang or "de",
                          aggressive_dash_splits, source=str(bpe_codes))
    out = Path(out)
    save_checkpoint(out, {
        **model_fields(hat.model, vocab),
        "converted_from": {"hat_checkpoint": str(hat_path), "dictionary": str(dictionary),
                           "bpe_codes": None if bpe_codes is None else str(bpe_codes)},
    })
    space_path = out.with_suffix(".space.yml")
    hat.space.save_yaml(space_path)
    config_path = None
    if hat.subtransformer is not None:
        config_path = out.with_suffix(".subtransformer.yml")
        hat.subtransformer.save_yaml(config_path)
    return Converted(hat, vocab, out, space_path, config_path)


def _read_text(path: str | Path, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: {what} file not found") from None
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err})") from None


def dictionary_of(vocab: Vocabulary | HatVocabulary) -> FairseqDictionary:
    """The fairseq dictionary with the vocabulary's ids: its own, or a sentencepiece model's pieces in id order."""
    if isinstance(vocab, HatVocabulary):
        return vocab.dictionary
    return FairseqDictionary([vocab.sp.id_to_piece(i) for i in range(len(SPECIALS), len(vocab))],
                             source="sentencepiece vocabulary")


def export_hat(checkpoint: str | Path, out_dir: str | Path, config: SubTransformerConfig | str | None = None,
               source_lang: str | None = None, target_lang: str | None = None) -> list[Path]:
    """Write a dynhat checkpoint's model in HAT's layout into ``out_dir``; return the files written.

    ``checkpoint.pt`` (args, model, optimizer history and extra state as fairseq 0.8 writes them),
    ``dict.<src>.txt`` and ``dict.<tgt>.txt`` (the joined dictionary twice, as HAT's preprocessing writes it),
    then the tokenizer: ``bpecodes`` for a model with subword-nmt codes, ``sentencepiece.model`` for a
    sentencepiece one, and with ``config`` (a configuration, or a name or YAML as ``--config`` takes) also
    ``subtransformer.yml`` (HAT's ``--configs`` file) with the checkpoint's args describing that SubTransformer.
    """
    model, vocab = load_trained(checkpoint)
    if isinstance(config, str):
        config = resolve_config(config, model.space)
    hat_vocab = isinstance(vocab, HatVocabulary)
    src = source_lang or (vocab.source_lang if hat_vocab else "en")
    tgt = target_lang or (vocab.target_lang if hat_vocab else "de")
    out_dir = Path(out_dir)
    written = [out_dir / "checkpoint.pt"]
    save_hat_checkpoint(written[0], model, src, tgt, data=str(out_dir.resolve()), subtransformer=config)
    table = dictionary_of(vocab)
    for lang in dict.fromkeys((src, tgt)):
        written.append(out_dir / f"dict.{lang}.txt")
        table.save(written[-1])
    if isinstance(vocab, HatVocabulary) and vocab.bpe_codes is not None:
        written.append(out_dir / "bpecodes")
        atomic_write_text(written[-1], vocab.bpe_codes)
    elif isinstance(vocab, Vocabulary):
        written.append(out_dir / "sentencepiece.model")
        vocab.save(written[-1])
    if config is not None:
        written.append(out_dir / "subtransformer.yml")
        config.save_yaml(written[-1])
    return written
