"""Released models: a trained SuperTransformer as a folder that loads with no pickle and checks its own bytes.

A training checkpoint holds the optimiser, RNG states and data position (what resuming needs) and loads through
``torch.load``. A device needs none of that. ``export_release`` writes what serving needs:

- ``model.safetensors``: the SuperTransformer's weights (the shared embedding once), in bf16, fp16 or fp32;
- ``vocab.model`` (sentencepiece) or ``vocab.json`` (a model converted from HAT: fairseq dictionary, BPE codes);
- ``space.yml``: the design space; ``model.json``: vocabulary size, dropout settings, training facts;
- ``card.md``: the model card (recipe, updates, hours, operating points' BLEU where a library is given);
- ``points.yml``: that library, where given: the operating points a user selects and serves without a search;
- ``manifest.json``: the SHA-256 of every other file, checked on every load.

``load_release`` reads such a folder, or a released model shipped with dynhat by name (``shipped_releases``);
every verb that takes a checkpoint takes either, and ``pretrained(name)`` (``dynhat.pretrained``) loads a shipped one.
``release_library`` is the path of its ``points.yml``: ``dynhat serve`` and ``dynhat scenario`` use it when given
no ``--points``, ``dynhat translate --point best`` selects from it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from dynhat.data.vocab import Vocabulary
from dynhat.errors import ConfigError, DataError
from dynhat.hat.text import HatVocabulary
from dynhat.inference.card import files_section, model_card
from dynhat.inference.checkpoint import check_state
from dynhat.inference.points import PointLibrary
from dynhat.io import atomic_write, atomic_write_text, check_manifest, file_sha256, read_json, write_manifest
from dynhat.model import ModelSettings, SuperTransformer
from dynhat.space import DesignSpace

FORMAT = "dynhat-release-1"
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
SHARED = ("decoder.embed_tokens.weight", "encoder.embed_tokens.weight")  # (alias, stored)
MODEL_KEYS = ("format", "dtype", "vocab", "vocab_size", "dropout", "attention_dropout")  # model.json, not facts
DEFAULT_RELEASE = "multi30k-en-de"
LIBRARY = "points.yml"  # a release's operating-point library
#: Scores an operating point of the reference library on the release's own weights: {column: BLEU}.
PointScorer = Callable[[SuperTransformer, Any, Any], Mapping[str, float]]


def releases_root() -> Path:
    """Where shipped releases live: ``releases/`` inside the installed package (``src/dynhat/releases/``)."""
    return Path(str(resources.files("dynhat").joinpath("releases")))


def shipped_releases() -> list[str]:
    """Names of the released models shipped inside the package (``src/dynhat/releases/NAME/``)."""
    root = releases_root()
    return sorted(p.name for p in root.iterdir() if (p / "manifest.json").is_file()) if root.is_dir() else []


def is_release(path_or_name: str | Path) -> bool:
    return (Path(path_or_name) / "manifest.json").is_file() or str(path_or_name) in shipped_releases()


def release_dir(path_or_name: str | Path) -> Path:
    """The folder of a release given by path or by shipped name (a path wins: it is what the caller wrote)."""
    if (Path(path_or_name) / "manifest.json").is_file():
        return Path(path_or_name)
    return releases_root() / str(path_or_name)


def pretrained(name: str = DEFAULT_RELEASE) -> tuple[SuperTransformer, Vocabulary | HatVocabulary]:
    """The shipped release ``name`` (model in eval mode, vocabulary), its files checked against the manifest:
    a model to serve without training one."""
    names = shipped_releases()
    if name not in names:
        raise DataError(f"no shipped release {name!r} in {releases_root()}: shipped are "
                        f"{', '.join(names) or 'none'} (a release folder elsewhere loads with load_release(PATH))")
    return load_release(releases_root() / name)


def release_library(path_or_name: str | Path) -> Path | None:
    """The operating-point library a release was exported with (``points.yml``, its card's points), after checking
    the folder against its manifest; None for a release without one or for a training checkpoint."""
    if not is_release(path_or_name):
        return None
    folder = release_dir(path_or_name)
    listed = check_manifest(folder, FORMAT, "dynhat release", required=("model.safetensors",))
    return folder / LIBRARY if LIBRARY in listed else None


def library_path(checkpoint: str | Path, points: str | Path | None,
                 otherwise: str = "give --points (a library of dynhat search)") -> Path:
    """``points`` when given, else the library the release ``checkpoint`` holds; a ``ConfigError`` that says
    what to do ``otherwise`` when there is neither."""
    if points is not None:
        return Path(points)
    shipped = release_library(checkpoint)
    if shipped is None:
        raise ConfigError(f"{checkpoint} holds no operating-point library (the points.yml of a release exported "
                          f"with --points): {otherwise}")
    return shipped


def library_file(source: str | Path) -> Path:
    """A library file as given, or the library a release (folder or shipped name) holds."""
    return library_path(source, None) if is_release(source) else Path(source)


def export_release(model: SuperTransformer, vocab: Vocabulary | HatVocabulary, out_dir: str | Path,
                   dtype: str = "bf16", facts: dict[str, Any] | None = None, card: str = "",
                   library: PointLibrary | None = None) -> Path:
    """Write ``model`` and ``vocab`` as a release folder; ``facts`` (training recipe, updates, hours) go into
    model.json, ``card`` is the model card's text, ``library`` (operating points searched on these weights) is
    ``points.yml``."""
    if dtype not in DTYPES:
        raise DataError(f"dtype {dtype!r} is not one of {sorted(DTYPES)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", DTYPES[dtype]).contiguous() for k, v in model.state_dict().items()
             if k != SHARED[0]}
    blob = save(state, metadata={"format": FORMAT})
    atomic_write(out / "model.safetensors", lambda handle: handle.write(blob))
    if isinstance(vocab, HatVocabulary):
        vocab_name = "vocab.json"
        atomic_write_text(out / vocab_name, json.dumps(vocab.to_state(), indent=1))
    else:
        vocab_name = "vocab.model"
        atomic_write(out / vocab_name, lambda handle: handle.write(vocab.to_bytes()))
    model.space.save_yaml(out / "space.yml")
    meta = {"format": FORMAT, "dtype": dtype, "vocab": vocab_name, "vocab_size": model.settings.vocab_size,
            "dropout": model.settings.dropout, "attention_dropout": model.settings.attention_dropout,
            **(facts or {})}
    atomic_write_text(out / "model.json", json.dumps(meta, indent=1))
    names = ["model.safetensors", vocab_name, "space.yml", "model.json"]
    if library is not None:
        library.save(out / LIBRARY)
        names.append(LIBRARY)
    else:
        (out / LIBRARY).unlink(missing_ok=True)  # a re-export without a library leaves none behind
    if card:  # the card lists every other file's sha256; its own is in the manifest
        sha256 = {name: file_sha256(out / name) for name in names}
        atomic_write_text(out / "card.md", card.rstrip("\n") + "\n\n" + files_section(sha256))
        names.append("card.md")
    write_manifest(out, names, FORMAT)
    return out


def export_checkpoint(checkpoint: str | Path, out_dir: str | Path, dtype: str = "bf16",
                      points: str | Path | None = None, name: str | None = None, train_command: str | None = None,
                      score: PointScorer | None = None) -> Path:
    """Release a training (or converted) checkpoint: its training facts (and ``train_command``, the command that
    trained it) go into model.json and the card, and the operating points of ``points`` (a library searched on
    this checkpoint) into the card, each scored by ``score`` on the release's own (rounded) weights, and into the
    release as its ``points.yml``."""
    from dynhat.inference.checkpoint import load_trained

    if dtype not in DTYPES:
        raise DataError(f"dtype {dtype!r} is not one of {sorted(DTYPES)}")
    model, vocab = load_trained(checkpoint)
    _round(model, DTYPES[dtype])  # what the release will hold: the card's scores are of the shipped weights
    name = name or Path(out_dir).name
    facts = training_facts(checkpoint, name, train_command)
    rows, origin, library = None, None, None
    if points is not None:
        library = PointLibrary.load(points, checkpoint=checkpoint, space=model.space)
        earlier = facts.get("released_with") or []  # a release re-exported: the commands that made it, in order
        facts["released_with"] = released_with([earlier] if isinstance(earlier, str) else earlier, library.commands,
                                               f"dynhat export {checkpoint} --out-dir {out_dir} --dtype {dtype} "
                                               f"--points {points}")
        split, count = library.bleu_set()
        origin = {"device": library.device.get("cpu"), "threads": library.threads, "bleu_split": split,
                  "bleu_sentences": count}
        rows = []
        for point in library.unique():
            splits = {} if score is None else {"bleu_splits": dict(score(model, vocab, point))}
            rows.append(point.to_dict() | splits | {"served": library.served_as(point)})
    return export_release(model, vocab, out_dir, dtype, facts, model_card(name, facts, rows, origin), library)


def released_with(earlier: list[str], library_commands: list[str], export: str) -> list[str]:
    """The commands that made a release, in order: the earlier ones, those that made the library it ships (each
    once), then the export. An export command already listed is not repeated: the library's new commands go
    before it, as the steps that made the file it names."""
    new = [c for c in dict.fromkeys(library_commands) if c not in earlier]
    if export in earlier:
        at = earlier.index(export)
        return [*earlier[:at], *new, *earlier[at:]]
    return [*earlier, *new, export]


def training_facts(checkpoint: str | Path, name: str, train_command: str | None = None) -> dict[str, Any]:
    """What the card and model.json say about how ``checkpoint`` was made (updates, hours, settings). A release
    re-exported (e.g. with the card of a library searched on it) keeps the facts of the checkpoint it came from."""
    from dynhat.inference.checkpoint import load_checkpoint

    if is_release(checkpoint):
        facts = read_json(release_dir(checkpoint) / "model.json", "dynhat release folder")
        kept = {k: v for k, v in facts.items() if k not in MODEL_KEYS}
        return kept | {"name": name} | ({"train_command": train_command} if train_command else {})
    payload = load_checkpoint(checkpoint)
    state = payload.get("state", {})
    facts = {"name": name, "trained_from": Path(checkpoint).name, "checkpoint_sha256": file_sha256(checkpoint),
             "updates": state.get("update"), "wall_hours": round(state.get("elapsed_s", 0.0) / 3600, 3),
             "cpu_hours": round(state.get("cpu_s", 0.0) / 3600, 3), "training_settings": payload.get("settings")}
    if train_command:
        facts["train_command"] = train_command
    return facts


def _round(model: SuperTransformer, dtype: torch.dtype) -> None:
    """Round every floating-point weight of ``model`` to ``dtype`` in place (kept in its own dtype)."""
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.to(dtype))


def load_release(path_or_name: str | Path) -> tuple[SuperTransformer, Vocabulary | HatVocabulary]:
    """The SuperTransformer (fp32, eval mode) and vocabulary of a release folder or shipped name, after checking
    every file against the manifest."""
    folder = release_dir(path_or_name)
    check_manifest(folder, FORMAT, "dynhat release", required=("model.safetensors",))
    meta = read_json(folder / "model.json", "dynhat release folder")
    space = DesignSpace.from_yaml(folder / "space.yml")
    try:
        tensors = load_file(folder / "model.safetensors")
        model = SuperTransformer(space, ModelSettings(vocab_size=int(meta["vocab_size"]),
                                                      dropout=float(meta["dropout"]),
                                                      attention_dropout=float(meta["attention_dropout"])))
    except (SafetensorError, KeyError, ValueError, TypeError) as err:
        raise DataError(f"{folder}: weights do not fit the release's space and vocabulary ({err})") from None
    if SHARED[1] in tensors:
        tensors[SHARED[0]] = tensors[SHARED[1]]
    check_state(folder / "model.safetensors", model.state_dict(), tensors)
    model.load_state_dict({k: v.float() for k, v in tensors.items()})
    vocab_path = folder / str(meta.get("vocab", ""))
    if vocab_path.name == "vocab.json":
        state = read_json(vocab_path, "dynhat release folder")
        vocab: Vocabulary | HatVocabulary = HatVocabulary.from_state(state, str(vocab_path))
    else:
        vocab = Vocabulary(vocab_path.read_bytes(), source=str(vocab_path))
    return model.eval(), vocab
