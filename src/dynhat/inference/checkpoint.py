"""The checkpoint format: one self-contained file that a trained SuperTransformer is served and resumed from.

A checkpoint (``format: dynhat-checkpoint-1``) is a dict of tensors and plain Python values, so it loads with
``torch.load(weights_only=True)``. Every checkpoint holds the model (``MODEL_FIELDS``) and, to be served, its
vocabulary:

- ``model``: the SuperTransformer's state dict;
- ``space``: its design space (``DesignSpace.to_dict``);
- ``settings``: at least ``dropout`` and ``attention_dropout`` (a training checkpoint: all its ``TrainSettings``);
- ``vocab_size``: the embedding's rows, which is the vocabulary's size;
- ``vocab``: the vocabulary, of the kind ``vocab_kind`` names: ``sentencepiece`` (the model's bytes as a uint8
  tensor; also what a checkpoint without the field holds) or ``fairseq`` (a fairseq dictionary, optional
  subword-nmt BPE codes and Moses settings as plain values, for models converted from HAT).

A training checkpoint adds what resuming needs (``TRAINING_FIELDS``: ``optimizer``, ``state``, ``rng``); a
converted one adds ``converted_from``. It is written to a temp file and renamed, so a run killed at any moment
leaves the previous checkpoint intact. Loading checks the fields and every weight's name and shape, so a damaged
or mismatched file is refused with the file, the key and what was expected, before any weight is used.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from dynhat.data.vocab import Vocabulary
from dynhat.errors import DataError
from dynhat.hat.text import HatVocabulary
from dynhat.io import atomic_write
from dynhat.model import ModelSettings, SuperTransformer
from dynhat.space import DesignSpace

FORMAT = "dynhat-checkpoint-1"
MODEL_FIELDS = ("model", "space", "settings", "vocab_size")  # and ``vocab``, which serving needs
TRAINING_FIELDS = ("optimizer", "state", "rng")


def model_fields(model: SuperTransformer, vocab: Vocabulary | HatVocabulary | None,
                 settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The fields of ``model`` and ``vocab`` (none for a model trained on token ids alone); ``settings`` defaults
    to the model's dropout settings."""
    if settings is None:
        settings = {"dropout": model.settings.dropout, "attention_dropout": model.settings.attention_dropout}
    return {"model": model.state_dict(), "space": model.space.to_dict(), "settings": dict(settings),
            "vocab_size": model.settings.vocab_size, **(vocab_fields(vocab) if vocab is not None else {})}


def vocab_fields(vocab: Vocabulary | HatVocabulary) -> dict[str, Any]:
    """The fields that store ``vocab``."""
    if isinstance(vocab, HatVocabulary):
        return {"vocab_kind": "fairseq", "vocab": vocab.to_state()}
    return {"vocab_kind": "sentencepiece", "vocab": torch.frombuffer(bytearray(vocab.to_bytes()), dtype=torch.uint8)
            .clone()}


def vocab_from_checkpoint(payload: Mapping[str, Any], source: str = "checkpoint") -> Vocabulary | HatVocabulary:
    if "vocab" not in payload:
        raise DataError(f"{source}: vocab: missing; a checkpoint to translate with holds its vocabulary")
    kind = payload.get("vocab_kind", "sentencepiece")
    if kind == "fairseq":
        return HatVocabulary.from_state(payload["vocab"], source)
    if kind != "sentencepiece":
        raise DataError(f"{source}: vocab_kind {kind!r} is neither 'sentencepiece' nor 'fairseq'")
    if not isinstance(payload["vocab"], torch.Tensor):
        raise DataError(f"{source}: vocab: expected the sentencepiece model as a uint8 tensor, got "
                        f"{type(payload['vocab']).__name__}")
    return Vocabulary(payload["vocab"].numpy().tobytes(), source=f"{source}: vocab")


def save_checkpoint(path: str | Path, payload: Mapping[str, Any]) -> None:
    """Write ``payload`` (``model_fields`` and any more) atomically."""
    payload = {"format": FORMAT, **payload}
    atomic_write(path, lambda handle: torch.save(payload, handle))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The payload of a dynhat checkpoint, after checking that it holds every field of ``MODEL_FIELDS``."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file
        raise DataError(f"{path}: not a readable checkpoint ({err})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise DataError(f"{path}: not a dynhat checkpoint (expected format {FORMAT!r})")
    missing = [name for name in MODEL_FIELDS if name not in payload]
    if missing:
        raise DataError(f"{path}: {missing[0]}: missing; a dynhat checkpoint holds {', '.join(MODEL_FIELDS)}")
    for name, kind in (("model", Mapping), ("space", Mapping), ("settings", Mapping), ("vocab_size", int)):
        if not isinstance(payload[name], kind) or isinstance(payload[name], bool):
            raise DataError(f"{path}: {name}: expected {'a mapping' if kind is Mapping else 'an integer'}, got "
                            f"{type(payload[name]).__name__}")
    return payload


def check_state(source: str | Path, ours: Mapping[str, torch.Tensor], theirs: Mapping[str, Any]) -> None:
    """Refuse weights ``theirs`` that ``load_state_dict`` into a model of state ``ours`` would not take: the first
    missing, unexpected or wrongly shaped key, with what was expected."""
    missing = [k for k in ours if k not in theirs]
    if missing:
        raise DataError(f"{source}: model: {missing[0]}: missing ({len(missing)} weights of this design space are "
                        f"missing; expected shape {tuple(ours[missing[0]].shape)})")
    unexpected = [k for k in theirs if k not in ours]
    if unexpected:
        raise DataError(f"{source}: model: {unexpected[0]}: unexpected ({len(unexpected)} weights that the design "
                        "space does not have; expected only the space's own)")
    for key, tensor in ours.items():
        shape = getattr(theirs[key], "shape", None)
        if shape is None or tuple(shape) != tuple(tensor.shape):
            got = "not a tensor" if shape is None else f"shape {tuple(shape)}"
            raise DataError(f"{source}: model: {key}: expected shape {tuple(tensor.shape)}, got {got}")


def model_from_checkpoint(path: str | Path, payload: Mapping[str, Any]
                          ) -> tuple[SuperTransformer, Vocabulary | HatVocabulary]:
    """The SuperTransformer (eval mode) and vocabulary that ``payload``, read from ``path``, holds."""
    space = DesignSpace.from_dict(payload["space"], source=f"{path}: space")
    vocab = vocab_from_checkpoint(payload, str(path))
    if len(vocab) != payload["vocab_size"]:
        raise DataError(f"{path}: vocab_size: {payload['vocab_size']}, but the stored vocabulary has {len(vocab)} "
                        "entries; expected the same number")
    settings = payload["settings"]
    try:
        dropout, attention_dropout = float(settings["dropout"]), float(settings["attention_dropout"])
    except KeyError as err:
        raise DataError(f"{path}: settings: {err.args[0]}: missing (expected a number)") from None
    except (TypeError, ValueError) as err:
        raise DataError(f"{path}: settings: expected numbers for dropout and attention_dropout ({err})") from None
    model = SuperTransformer(space, ModelSettings(vocab_size=payload["vocab_size"], dropout=dropout,
                                                  attention_dropout=attention_dropout))
    check_state(path, model.state_dict(), payload["model"])
    model.load_state_dict(payload["model"])
    return model.eval(), vocab


def load_trained(path: str | Path) -> tuple[SuperTransformer, Vocabulary | HatVocabulary]:
    """A SuperTransformer (eval mode) and its vocabulary from a training or converted checkpoint, a release
    folder or the name of a shipped release: a sentencepiece ``Vocabulary`` or, for a model converted from HAT, a
    ``HatVocabulary``."""
    from dynhat.inference.release import is_release, load_release  # the release module builds on this one

    if is_release(path):
        return load_release(path)
    return model_from_checkpoint(path, load_checkpoint(path))
