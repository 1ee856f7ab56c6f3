"""Operating-point libraries: the searched SubTransformers of one SuperTransformer on one device, in one YAML file.

Schema (``format: dynhat-operating-points``, ``version: 1``)::

    device: {cpu, logical_cores, torch}     # where the latencies were measured
    threads: 1                              # torch intra-op threads of every latency below
    space: multi30k-cpu                     # design space name (or YAML path)
    space_definition: {HAT's space keys}    # the space itself, so a reduced or custom space needs no other file
    checkpoint: {path, sha256}              # the SuperTransformer whose weights the points inherit
    fitness: {valid_sentences, seed, mode, precision,   # validation subset and precision of the losses,
              bleu_split | bleu_files: [src, ref],  # and the sentences every point's ``bleu`` is measured on
              bleu_sentences}                   #   (the first N; none: all)
    points:                                 # fastest first
      - id, constraint_ms, predicted_ms, measured_ms, valid_loss, bleu, params, decoder_layers, beam,
        config: {HAT's SubTransformer keys}
        bleu_int8                           # optional: the same BLEU served in int8 (dynhat points int8)

A point is a SubTransformer and the beam it decodes with: the searched points use the search's beam (HAT's 4,
the default of files without ``beam``); a *decoding variant* (``dynhat.search.decoding``) serves a searched
SubTransformer with a narrower beam, its latency measured at that beam and its ``predicted_ms`` empty (the
predictor models the search's beam). Ids are the SubTransformer's, with ``-b<beam>`` unless the beam is 4.

A library is only meaningful with its checkpoint: loading it against another checkpoint (by SHA-256) or a space
that cannot hold its configurations is an error. The library a release folder holds (``points.yml``, written by
``dynhat export --points``) belongs to the weights beside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from dynhat import schema
from dynhat.errors import ConfigError, DataError
from dynhat.io import atomic_write_text, file_sha256, read_yaml
from dynhat.space import DesignSpace, SubTransformerConfig, load_space

FORMAT = "dynhat-operating-points"
VERSION = 1
DEFAULT_BEAM = 4  # HAT's protocol and fairseq's WMT setting
MAX_BEAM = 64
LIBRARY_KEYS = ("format", "version", "device", "threads", "space", "space_definition", "checkpoint", "fitness",
                "commands", "points")
POINT_KEYS = ("id", "constraint_ms", "predicted_ms", "measured_ms", "valid_loss", "bleu", "params",
              "decoder_layers", "beam", "config", "bleu_int8")


@dataclass
class OperatingPoint:
    config: SubTransformerConfig
    constraint_ms: float
    predicted_ms: float | None  # None: a decoding variant, measured only
    valid_loss: float
    measured_ms: float | None = None
    bleu: float | None = None
    params: int | None = None
    beam: int = DEFAULT_BEAM
    bleu_int8: float | None = None  # ``bleu`` with the point's projections in int8 (``model.quantized``)

    @property
    def id(self) -> str:
        return self.config.id if self.beam == DEFAULT_BEAM else f"{self.config.id}-b{self.beam}"

    @property
    def latency_ms(self) -> float:
        """Measured on the device where available, else predicted."""
        if self.measured_ms is not None:
            return self.measured_ms
        if self.predicted_ms is None:
            raise ValueError(f"point {self.id} has neither a measured nor a predicted latency")
        return self.predicted_ms

    def to_dict(self) -> dict[str, Any]:
        out = {"id": self.id, "constraint_ms": self.constraint_ms,
               "predicted_ms": None if self.predicted_ms is None else round(self.predicted_ms, 4),
               "measured_ms": None if self.measured_ms is None else round(self.measured_ms, 4),
               "valid_loss": round(self.valid_loss, 5), "bleu": self.bleu, "params": self.params,
               "decoder_layers": self.config.decoder_layer_num, "beam": self.beam, "config": self.config.to_dict()}
        if self.bleu_int8 is not None:
            out["bleu_int8"] = self.bleu_int8
        return out


@dataclass
class PointLibrary:
    points: list[OperatingPoint]
    space: str
    checkpoint: dict[str, str]
    device: dict[str, Any]
    threads: int
    fitness: dict[str, Any] = field(default_factory=dict)
    space_definition: dict[str, Any] | None = None
    commands: list[str] = field(default_factory=list)  # the dynhat commands that made it, in order: how to redo it

    def made_by(self, command: str | None) -> PointLibrary:
        """This library with ``command`` appended to the commands that made it (None: one made from Python)."""
        return self if command is None else replace(self, commands=[*self.commands, command])

    def design_space(self) -> DesignSpace:
        if self.space_definition is not None:
            return DesignSpace.from_dict(self.space_definition, source=f"space_definition of {self.space}")
        return load_space(self.space)

    def sorted(self) -> list[OperatingPoint]:
        """In constraint order: one row per constraint, even where one configuration won several."""
        return sorted(self.points, key=lambda p: (p.constraint_ms, p.latency_ms))

    def unique(self) -> list[OperatingPoint]:
        """Each point once, in constraint order: a configuration that won several constraints was measured for
        each; its first (tightest-constraint) row is the one kept."""
        first: dict[str, OperatingPoint] = {}
        for p in self.sorted():
            first.setdefault(p.id, p)
        return list(first.values())

    def bleu_set(self) -> tuple[str, int | None]:
        """What every point's ``bleu`` is measured on, and on how many of its first sentences (None: all): a
        Multi30k split, the validation set unless told otherwise, so that ranking points by it selects nothing on
        test data; or a development set of the user's (``bleu_files``, named by its source file). A library that
        records ``test_sentences`` instead (the older format) measured its BLEU on test_2016_flickr."""
        files = self.fitness.get("bleu_files")
        if files:
            return str(files[0] if isinstance(files, list) else files), self.fitness.get("bleu_sentences")
        if "bleu_split" in self.fitness:
            return str(self.fitness["bleu_split"]), self.fitness.get("bleu_sentences")
        return "test_2016_flickr", self.fitness.get("test_sentences")

    def quality(self, point: OperatingPoint) -> tuple[float, float, int]:
        """Sort key, best first: the BLEU on the library's sentences (``bleu_set``) where every point has one, then
        the validation loss, then the wider beam. BLEU sees what a beam adds and a loss cannot (a beam's loss is
        its SubTransformer's): ranked by loss alone, a deeper SubTransformer's greedy variant outranks a shallower
        one at beam 4 that translates better and faster. A library without BLEU everywhere ranks by loss."""
        by_bleu = all(p.bleu is not None for p in self.points)
        return -(point.bleu or 0.0) if by_bleu else 0.0, point.valid_loss, -point.beam

    def efficient(self) -> list[OperatingPoint]:
        """What a runtime serves, fastest first: each point once, without those another point beats on both
        latency and quality (``quality``)."""
        kept: list[OperatingPoint] = []
        for p in sorted(self.unique(), key=lambda p: (p.latency_ms, self.quality(p))):
            if not kept or self.quality(p) < self.quality(kept[-1]):
                kept.append(p)
        return kept

    def served_as(self, point: OperatingPoint) -> str:
        """How a runtime serves ``point``: by the names ``select`` gives it, as another served point (``yes``), or
        not at all (``no``: another point is faster and better)."""
        served = self.efficient()
        if point.id not in {p.id for p in served}:
            return "no"
        named = [n for n, p in _named(served).items() if n in ("fastest", "middle", "best") and p.id == point.id]
        return ", ".join(named) or "yes"

    def select(self, name: str, source: str = "the library") -> OperatingPoint:
        """A point by name: ``fastest`` / ``smallest``, ``middle``, ``best`` / ``largest`` (of ``efficient()``),
        a point id, or a SubTransformer id (its widest served beam, else its widest beam): by id any point of the
        library, served or not."""
        served, points = self.efficient(), self.unique()
        named = _named(served)
        if name in named:
            return named[name]
        found = ([p for p in points if p.id == name] or [p for p in served if p.config.id == name]
                 or [p for p in points if p.config.id == name])
        if not found:
            raise DataError(f"{source}: no point {name!r}; expected fastest, middle, best or one of "
                            f"{[p.id for p in points]}")
        return max(found, key=lambda p: p.beam)

    def save(self, path: str | Path) -> None:
        data = {"format": FORMAT, "version": VERSION, "device": self.device, "threads": self.threads,
                "space": self.space, "space_definition": self.space_definition, "checkpoint": self.checkpoint,
                "fitness": self.fitness, "commands": self.commands,
                "points": [p.to_dict() for p in self.sorted()]}
        atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))

    @classmethod
    def load(cls, path: str | Path, checkpoint: str | Path | None = None,
             space: DesignSpace | None = None) -> PointLibrary:
        """Read a library; with ``checkpoint``, refuse it unless the file's SHA-256 is the library's."""
        path = Path(path)
        data = read_yaml(path, "operating-point library")
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise DataError(f"{path}: not an operating-point library (format {FORMAT!r} expected)")
        if data.get("version") != VERSION:
            raise DataError(f"{path}: version {data.get('version')}, this dynhat reads {VERSION}")
        schema.known_keys(data, LIBRARY_KEYS, str(path))
        for key in ("device", "threads", "space", "checkpoint", "points"):
            if key not in data:
                raise ConfigError("missing", source=str(path), field=key)
        origin = schema.mapping(data["checkpoint"], str(path), "checkpoint")
        name = schema.text(data, "space", str(path))
        if checkpoint is not None and not _ships_with(path, checkpoint):
            actual = checkpoint_sha256(checkpoint)
            if actual != origin.get("sha256"):
                raise DataError(f"{path}: its points belong to checkpoint sha256 {origin.get('sha256')} "
                                f"({origin.get('path')}), but {checkpoint} has sha256 {actual}")
        definition = data.get("space_definition")
        if definition is not None and not isinstance(definition, dict):
            raise ConfigError("expected a mapping of HAT space keys", source=str(path), field="space_definition")
        if space is None:
            space = (DesignSpace.from_dict(definition, source=f"{path}: space_definition") if definition
                     else load_space(name))
        if not isinstance(data["points"], list):
            raise ConfigError("expected a list of points", source=str(path), field="points")
        commands = data.get("commands") or []
        if not isinstance(commands, list) or not all(isinstance(c, str) for c in commands):
            raise ConfigError("expected a list of command lines", source=str(path), field="commands")
        points = [_point(item, f"{path}: points[{i}]", space) for i, item in enumerate(data["points"])]
        return cls(points, name, origin, schema.mapping(data["device"], str(path), "device"),
                   schema.integer(data, "threads", str(path), low=1),
                   schema.mapping(data.get("fitness") or {}, str(path), "fitness"), definition, commands)


def sentences_text(split: str, count: int | None) -> str:
    """How a library's BLEU sentences (``PointLibrary.bleu_set``) read in a card, a summary or a listing."""
    return f"the first {count} {split} sentences" if count else f"all {split} sentences"


def checkpoint_sha256(checkpoint: str | Path) -> str:
    """The SHA-256 that pins a SuperTransformer: a checkpoint file's, or a release's (folder or shipped name:
    its manifest's, which holds every file's)."""
    from dynhat.inference.release import is_release, release_dir  # only with a model loaded: torch is there

    return file_sha256(release_dir(checkpoint) if is_release(checkpoint) else checkpoint)


def _named(served: list[OperatingPoint]) -> dict[str, OperatingPoint]:
    """The names ``select`` takes, over the served points (fastest first)."""
    return {"fastest": served[0], "smallest": served[0], "middle": served[len(served) // 2], "best": served[-1],
            "largest": served[-1]}


def _ships_with(path: Path, checkpoint: str | Path) -> bool:
    """Whether ``path`` is the library a release folder holds (``release_library``): its manifest pins it to the
    weights beside it, so the SHA-256 it records is that of the model it was searched on before the export."""
    from dynhat.inference.release import LIBRARY, is_release, release_dir

    return is_release(checkpoint) and path.resolve() == (release_dir(checkpoint) / LIBRARY).resolve()


def _point(item: Any, where: str, space: DesignSpace) -> OperatingPoint:
    item = schema.mapping(item, where)
    schema.known_keys(item, POINT_KEYS, where)
    if "config" not in item:
        raise ConfigError("missing", source=where, field="config")
    config = SubTransformerConfig.from_dict(item["config"], source=where).validate(space, source=where)
    point = OperatingPoint(
        config, schema.number(item, "constraint_ms", where, low=0, strict=True),
        schema.number(item, "predicted_ms", where, default=None, low=0, strict=True),
        schema.number(item, "valid_loss", where, low=0),
        schema.number(item, "measured_ms", where, default=None, low=0, strict=True),
        schema.number(item, "bleu", where, default=None, low=0, high=100),
        schema.integer(item, "params", where, default=None, low=1),
        schema.integer(item, "beam", where, default=DEFAULT_BEAM, low=1, high=MAX_BEAM),  # no beam: HAT's 4
        schema.number(item, "bleu_int8", where, default=None, low=0, high=100))
    if point.measured_ms is None and point.predicted_ms is None:
        raise ConfigError("a point needs a measured_ms or a predicted_ms", source=where)
    derived = {"id": point.id, "decoder_layers": config.decoder_layer_num}
    for key, value in derived.items():
        if item.get(key) is not None and item[key] != value:
            raise ConfigError(f"{item[key]!r} does not match its configuration and beam ({value!r})", source=where,
                              field=key)
    return point
