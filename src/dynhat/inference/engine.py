"""Engine folders: the operating points of a library exported to CTranslate2, served by a process without torch.

``export_engine`` writes, from a SuperTransformer (training checkpoint, release folder or shipped name) and an
operating-point library searched on it:

- ``points/<SubTransformer id>/``: each served point's CTranslate2 model (``inference.ct2``): only the weights
  that SubTransformer uses, in ``quantization`` (int8 by default); decoding variants share their SubTransformer's;
- ``points.yml``: the library's served points (``PointLibrary.efficient``) as searched (latencies of the search's
  device; the runtime calibrates its own);
- ``vocab.model``: the sentencepiece model;
- ``engine.json``: the engine, its version and quantization, the SuperTransformer the weights came from, and each
  point's BLEU through the engine where scored (``scores``);
- ``manifest.json``: the SHA-256 of every other file, checked on every load.

``load_engine`` reads one back as an ``EngineFolder`` (library, vocabulary, ``backend()``) without importing torch
or dynhat's model: a service over it (``dynhat serve ENGINE_DIR``) holds CTranslate2's weights and nothing of the
SuperTransformer. A point CTranslate2 cannot express (per-layer heads, arbitrary encoder-decoder attention) is
refused at export, naming the point and the field; ``dynhat search --engine ctranslate2`` keeps to what it can.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dynhat.data.vocab import Vocabulary
from dynhat.errors import DataError
from dynhat.inference.points import OperatingPoint, PointLibrary, checkpoint_sha256
from dynhat.io import atomic_write, atomic_write_text, check_manifest, read_json, write_manifest

if TYPE_CHECKING:
    from dynhat.runtime.backends import CT2Backend

FORMAT = "dynhat-engine-1"
ENGINES = ("ctranslate2",)
QUANTIZATIONS = ("int8", "int8_float32", "float32", "int16", "float16", "bfloat16")
#: Scores a point through its exported engine: (translator with ``translate(sentences)``, point) -> {split: BLEU}.
EngineScorer = Callable[[Any, OperatingPoint], Mapping[str, float]]


def is_engine(path: str | Path) -> bool:
    return (Path(path) / "engine.json").is_file()


@dataclass
class EngineFolder:
    folder: Path
    library: PointLibrary
    vocab: Vocabulary
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def quantization(self) -> str:
        return str(self.meta.get("quantization"))

    def point(self, name: str) -> OperatingPoint:
        """A served point by name (``PointLibrary.select``: fastest, middle, best or an id)."""
        return self.library.select(name, str(self.folder))

    def translator(self, point: OperatingPoint, beam: int | None = None, lenpen: float = 0.6,
                   compute_type: str = "default", threads: int = 1) -> Any:
        """``point``'s engine alone (``inference.ct2.CT2Translator``), at its beam unless ``beam`` is given."""
        from dynhat.inference.ct2 import CT2Translator

        return CT2Translator(self.folder / "points" / point.config.id, self.vocab, beam=beam or point.beam,
                             lenpen=lenpen, compute_type=compute_type, threads=threads)

    def backend(self, compute_type: str = "default", threads: int = 1) -> CT2Backend:
        """The served points loaded once (``compute_type`` "default": as exported) at ``threads`` threads."""
        from dynhat.runtime.backends import CT2Backend

        return CT2Backend(self.vocab, self.library.efficient(), self.folder / "points", compute_type, threads)


def export_engine(checkpoint: str | Path, points: str | Path, out_dir: str | Path, engine: str = "ctranslate2",
                  quantization: str = "int8", score: EngineScorer | None = None) -> Path:
    """Export the served points of library ``points`` (searched on ``checkpoint``) as an engine folder; each
    point scored through the engine by ``score`` when given. Every point is checked before anything is written;
    the folder is replaced."""
    from dynhat.inference.checkpoint import load_trained
    from dynhat.inference.ct2 import CT2Translator, export_points
    from dynhat.inference.release import is_release, release_dir

    if engine not in ENGINES:
        raise DataError(f"engine: expected one of {list(ENGINES)}, got {engine!r}")
    if quantization not in QUANTIZATIONS:
        raise DataError(f"quantization: expected one of {list(QUANTIZATIONS)}, got {quantization!r}")
    model, vocab = load_trained(checkpoint)
    checkpoint = release_dir(checkpoint) if is_release(checkpoint) else Path(checkpoint)  # a shipped name: its folder
    if not isinstance(vocab, Vocabulary):
        raise DataError(f"{checkpoint}: an engine folder needs a sentencepiece vocabulary; this model has HAT's "
                        "(fairseq dictionary and BPE codes)")
    library = PointLibrary.load(points, checkpoint=checkpoint, space=model.space)
    served = library.efficient()
    if not served:
        raise DataError(f"{points}: the library has no operating points to export")
    out = Path(out_dir)
    if out.exists() and not is_engine(out) and any(out.iterdir()):
        raise DataError(f"{out}: exists and is not an engine folder; give an empty or new folder")
    shutil.rmtree(out / "points", ignore_errors=True)
    (out / "manifest.json").unlink(missing_ok=True)  # incomplete until the new manifest is written
    folders = export_points(model, vocab, served, out / "points", quantization)
    replace(library, points=served).save(out / "points.yml")
    atomic_write(out / "vocab.model", lambda handle: handle.write(vocab.to_bytes()))
    scores = {}
    if score is not None:
        for p in served:
            translator = CT2Translator(out / "points" / p.config.id, vocab, beam=p.beam)
            scores[p.id] = dict(score(translator, p))
    import ctranslate2

    meta = {"format": FORMAT, "engine": engine, "version": ctranslate2.__version__, "quantization": quantization,
            "source": {"path": checkpoint.name, "sha256": checkpoint_sha256(checkpoint)}, "scores": scores}
    atomic_write_text(out / "engine.json", json.dumps(meta, indent=1))
    names = ["points.yml", "vocab.model", "engine.json"]
    names += sorted(str(f.relative_to(out)) for folder in folders for f in folder.iterdir() if f.is_file())
    write_manifest(out, names, FORMAT)
    return out


def load_engine(path: str | Path) -> EngineFolder:
    """An engine folder, every file checked against its manifest; no torch is imported."""
    folder = Path(path)
    if not is_engine(folder):
        raise DataError(f"{folder}: not an engine folder (no engine.json; write one with dynhat export --engine)")
    check_manifest(folder, FORMAT, "dynhat engine folder", required=("engine.json", "points.yml", "vocab.model"))
    meta = read_json(folder / "engine.json", "dynhat engine folder")
    if meta.get("format") != FORMAT or meta.get("engine") not in ENGINES:
        raise DataError(f"{folder / 'engine.json'}: expected format {FORMAT!r} and an engine of {list(ENGINES)}")
    library = PointLibrary.load(folder / "points.yml")
    vocab = Vocabulary((folder / "vocab.model").read_bytes(), source=str(folder / "vocab.model"))
    return EngineFolder(folder, library, vocab, meta)
