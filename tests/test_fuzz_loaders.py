"""Property-based fuzzing of every file loader: generated bad files end in a DynhatError that names the file, never
in another exception, and a file poisoned with a value no field accepts is never loaded.

Each file kind starts from a valid file; hypothesis poisons one field (NaN, an infinity, a nested mapping, a list of
lists: values no field of any format accepts), deletes one, adds an unknown one, or replaces the file with random
text or bytes. A poisoned file must be refused; the other mutations may load (an optional field, say) or be
refused, but only ever cleanly.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from helpers.toy_checkpoint import toy_checkpoint
from helpers.toy_runtime import toy_parts
from helpers.toy_train import TOY_SPACE
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dynhat.errors import DynhatError
from dynhat.inference.checkpoint import load_trained
from dynhat.inference.points import PointLibrary
from dynhat.latency.collect import COLUMNS, collect
from dynhat.latency.dataset import load_collection
from dynhat.latency.settings import CollectSettings
from dynhat.runtime.scenario import Scenario
from dynhat.space import DesignSpace, SubTransformerConfig, load_space
from dynhat.space.sampling import middle
from dynhat.train.settings import TrainSettings

ROOT = Path(__file__).resolve().parents[1]
POISONS = (math.nan, math.inf, -math.inf, {"nested": {"deep": [1]}}, [[1, 2], [3]])
FUZZ = settings(max_examples=30, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place in a YAML document a value can stand: mapping keys and list items, nested ones too."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    out = []
    for key, value in items:
        out.append((*prefix, key))
        out += _paths(value, (*prefix, key))
    return out


def _at(doc: Any, path: tuple) -> Any:
    for key in path:
        doc = doc[key]
    return doc


def _edit(doc: Any, path: tuple, value: Any = None, delete: bool = False) -> Any:
    doc = copy.deepcopy(doc)
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return doc


class YamlKind:
    """A file kind read from YAML: a valid document, its loader, and the places that hold free-form metadata."""

    def __init__(self, doc: Any, load: Callable[[Path], object], free: tuple[tuple, ...] = ()) -> None:
        self.doc, self.load, self.free = doc, load, free

    def poisonable(self) -> list[tuple]:
        return [p for p in _paths(self.doc) if not any(p[:len(f)] == f for f in self.free)]


@pytest.fixture(scope="module")
def kinds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, YamlKind]:
    root = tmp_path_factory.mktemp("valid")
    space_path = root / "toy.yml"
    space_path.write_text(yaml.safe_dump(TOY_SPACE))
    space = load_space(space_path)
    _, _, library = toy_parts(root)
    library.save(root / "points.yml")
    points_doc = yaml.safe_load((root / "points.yml").read_text())

    def config(path: Path) -> object:
        return SubTransformerConfig.from_yaml(path).validate(space, source=str(path))

    return {
        "space": YamlKind(TOY_SPACE, DesignSpace.from_yaml),
        "config": YamlKind(middle(space).to_dict(), config),
        "train settings": YamlKind(yaml.safe_load((ROOT / "benchmarks/supertransformer.yml").read_text()),
                                   TrainSettings.from_yaml),
        "points": YamlKind(points_doc, PointLibrary.load, free=(("device",), ("checkpoint",), ("fitness",))),
        "scenario": YamlKind(yaml.safe_load((ROOT / "src/dynhat/configs/scenario.yml").read_text()),
                             Scenario.from_yaml),
    }


KINDS = ("space", "config", "train settings", "points", "scenario")


def _refused(load: Callable[[Path], object], path: Path) -> None:
    with pytest.raises(DynhatError) as err:
        load(path)
    assert path.name in str(err.value), f"the message does not name the file: {err.value}"


def _clean(load: Callable[[Path], object], path: Path) -> None:
    try:
        load(path)
    except DynhatError as err:
        assert path.name in str(err), f"the message does not name the file: {err}"


def test_every_valid_file_loads(kinds: dict[str, YamlKind], tmp_path: Path) -> None:
    for name in KINDS:
        path = tmp_path / f"{name.replace(' ', '_')}.yml"
        path.write_text(yaml.safe_dump(kinds[name].doc))
        kinds[name].load(path)


@pytest.mark.parametrize("name", KINDS)
@FUZZ
@given(data=st.data())
def test_a_poisoned_field_is_refused(kinds: dict[str, YamlKind], name: str, tmp_path: Path, data: st.DataObject) \
        -> None:
    kind = kinds[name]
    path = tmp_path / "poisoned.yml"
    where = data.draw(st.sampled_from(kind.poisonable()), label="field")
    poison = data.draw(st.sampled_from(POISONS), label="value")
    path.write_text(yaml.safe_dump(_edit(kind.doc, where, poison)))
    _refused(kind.load, path)


@pytest.mark.parametrize("name", KINDS)
@FUZZ
@given(data=st.data())
def test_an_unknown_field_is_refused(kinds: dict[str, YamlKind], name: str, tmp_path: Path, data: st.DataObject) \
        -> None:
    """A misspelt optional key would otherwise fall back to its default unnoticed."""
    kind = kinds[name]
    path = tmp_path / "unknown.yml"
    mappings = [()] + [p for p in kind.poisonable() if isinstance(_at(kind.doc, p), dict)]
    where = data.draw(st.sampled_from(mappings), label="mapping")
    key = data.draw(st.text(min_size=1, max_size=8).filter(lambda k: k not in _at(kind.doc, where)), label="key")
    path.write_text(yaml.safe_dump(_edit(kind.doc, (*where, key), 1)))
    _refused(kind.load, path)


@pytest.mark.parametrize("name", KINDS)
@FUZZ
@given(data=st.data())
def test_a_missing_field_is_loaded_or_refused_cleanly(kinds: dict[str, YamlKind], name: str, tmp_path: Path,
                                                      data: st.DataObject) -> None:
    kind = kinds[name]
    path = tmp_path / "missing.yml"
    where = data.draw(st.sampled_from(_paths(kind.doc)), label="field")
    path.write_text(yaml.safe_dump(_edit(kind.doc, where, delete=True)))
    _clean(kind.load, path)


@pytest.mark.parametrize("name", KINDS)
@FUZZ
@given(raw=st.one_of(st.binary(max_size=200), st.text(max_size=200).map(lambda s: s.encode("utf-8", "replace"))))
def test_random_bytes_are_refused_cleanly(kinds: dict[str, YamlKind], name: str, tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "random.yml"
    path.write_bytes(raw)
    _clean(kinds[name].load, path)


def test_a_directory_or_a_missing_file_is_refused(kinds: dict[str, YamlKind], tmp_path: Path) -> None:
    (tmp_path / "dir.yml").mkdir()
    for name in KINDS:
        _refused(kinds[name].load, tmp_path / "dir.yml")
        _refused(kinds[name].load, tmp_path / "missing.yml")


# ------------------------------------------------------------------------------------------ latency collections
@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A real (tiny) collection: its CSV text and its sidecar's."""
    root = tmp_path_factory.mktemp("collection")
    (root / "toy.yml").write_text(yaml.safe_dump(TOY_SPACE))
    out = root / "lat.csv"
    collect(CollectSettings(space=str(root / "toy.yml"), configs=5, runs=2, warmup=1, src_len=4, tgt_len=3, beam=1,
                            probe_every=3, vocab_size=24), out, progress=False)
    load_collection(out)
    return out.read_text(), Path(f"{out}.json").read_text()


NUMERIC = ("encoder_ms", "decoder_ms", "encoder_std_ms", "decoder_std_ms", "elapsed_s")


@FUZZ
@given(data=st.data())
def test_a_poisoned_latency_cell_is_refused(collection: tuple[str, str], tmp_path: Path, data: st.DataObject) \
        -> None:
    text, sidecar = collection
    rows = list(csv.reader(io.StringIO(text)))
    line = data.draw(st.integers(1, len(rows) - 1), label="line")
    column = data.draw(st.sampled_from(NUMERIC), label="column")
    rows[line][COLUMNS.index(column)] = data.draw(st.sampled_from(["nan", "inf", "-inf", "-1", "fast", "", "1e999"]),
                                                  label="value")
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    (tmp_path / "lat.csv").write_text(out.getvalue())
    (tmp_path / "lat.csv.json").write_text(sidecar)
    _refused(load_collection, tmp_path / "lat.csv")


@FUZZ
@given(data=st.data())
def test_an_edited_collection_or_sidecar_is_loaded_or_refused_cleanly(collection: tuple[str, str], tmp_path: Path,
                                                                      data: st.DataObject) -> None:
    text, sidecar = collection
    meta = json.loads(sidecar)
    if data.draw(st.booleans(), label="edit the sidecar"):
        where = data.draw(st.sampled_from(_paths(meta)), label="field")
        if data.draw(st.booleans(), label="delete"):
            meta = _edit(meta, where, delete=True)
        else:
            meta = _edit(meta, where, data.draw(st.sampled_from((*POISONS[3:], None, "x", -1, True)), label="value"))
        sidecar = json.dumps(meta)
    else:
        lines = text.splitlines(keepends=True)
        line = data.draw(st.integers(0, len(lines) - 1), label="line")
        cut = data.draw(st.integers(0, len(lines[line])), label="at")
        insert = data.draw(st.text(alphabet=',"{}[]:0123456789abc-\n', max_size=12), label="inserted")
        lines[line] = lines[line][:cut] + insert + lines[line][cut:]
        text = "".join(lines)
    (tmp_path / "lat.csv").write_text(text)
    (tmp_path / "lat.csv.json").write_text(sidecar)
    _clean(load_collection, tmp_path / "lat.csv")


# ------------------------------------------------------------------------------------------------ checkpoints
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    path = tmp_path_factory.mktemp("checkpoint") / "toy.pt"
    toy_checkpoint(path)
    load_trained(path)
    return torch.load(path, weights_only=True)


def _damaged(payload: dict[str, Any], data: st.DataObject) -> dict[str, Any]:
    """The payload with one thing wrong that loading must notice."""
    payload = dict(payload)
    model = dict(payload["model"])
    key = data.draw(st.sampled_from(sorted(model)), label="weight")
    damage = data.draw(st.sampled_from(["drop weight", "extra weight", "reshape weight", "vocab size", "drop field",
                                        "settings"]), label="damage")
    if damage == "drop weight":
        del model[key]
    elif damage == "extra weight":
        model[f"{key}.extra"] = torch.zeros(1)
    elif damage == "reshape weight":
        model[key] = torch.zeros(*(s + 1 for s in model[key].shape)) if model[key].dim() else torch.zeros(2)
    elif damage == "vocab size":
        payload["vocab_size"] = payload["vocab_size"] + data.draw(st.sampled_from([-1, 1, 1000]), label="by")
    elif damage == "drop field":
        del payload[data.draw(st.sampled_from(["model", "space", "vocab", "vocab_size", "settings"]), label="field")]
    else:
        payload["settings"] = data.draw(st.sampled_from([[], "x", {"dropout": "high"}, None]), label="settings")
    payload["model"] = model
    return payload


@FUZZ
@given(data=st.data())
def test_a_damaged_checkpoint_is_refused(checkpoint: dict[str, Any], tmp_path: Path, data: st.DataObject) -> None:
    path = tmp_path / "damaged.pt"
    torch.save(_damaged(checkpoint, data), path)
    _refused(load_trained, path)


@FUZZ
@given(raw=st.binary(max_size=400), keep=st.integers(0, 4000))
def test_random_or_truncated_checkpoint_bytes_are_refused(checkpoint: dict[str, Any], tmp_path: Path, raw: bytes,
                                                          keep: int) -> None:
    path = tmp_path / "bytes.pt"
    torch.save(checkpoint, path)
    path.write_bytes(path.read_bytes()[:keep] + raw)
    _clean(load_trained, path)
