"""The recipes that the CLI, the pipeline and the benchmarks share: one population rule, constraints spread over the
predicted range, adding a verified point to a library, the scenario's targets."""

from __future__ import annotations

import shlex
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from helpers.toy_runtime import toy_parts

from dynhat.data.corpus import ParallelCorpus
from dynhat.errors import ConfigError
from dynhat.inference.points import OperatingPoint, PointLibrary
from dynhat.recipes.points import add_point, find_point
from dynhat.recipes.scenario import check_targets
from dynhat.runtime.dynamic import TranslationResult
from dynhat.runtime.experiment import Experiment, PhaseReport
from dynhat.search.evolution import EvolutionSettings
from dynhat.search.fitness import LossFitness, validation_subset
from dynhat.search.operating_points import constraints_between
from dynhat.space.sampling import largest, middle, smallest


class WidthPredictor:
    """A stand-in predictor: latency is the decoder's layer count times 10 ms."""

    def features_of(self, config):
        return np.array([config.decoder_layer_num], dtype=np.float64)

    def predict(self, features: np.ndarray) -> np.ndarray:
        return np.atleast_2d(features)[:, 0] * 10.0


def _toy_library(tmp_path: Path, bleu: tuple[float, float], fitness: dict, greedy_largest: bool = True):
    """A toy checkpoint (``toy.pt``) and a library of its smallest and largest SubTransformers (``lib.yml``, the
    largest greedy unless told otherwise) in ``tmp_path``; returns the checkpoint's space."""
    from helpers.toy_checkpoint import toy_checkpoint

    from dynhat.io import file_sha256

    space = toy_checkpoint(tmp_path / "toy.pt")[0].space
    origin = {"path": str(tmp_path / "toy.pt"), "sha256": file_sha256(tmp_path / "toy.pt")}
    points = [OperatingPoint(smallest(space), 10.0, 9.0, 3.0, 9.5, bleu[0], 100),
              OperatingPoint(largest(space), 20.0, 19.0, 2.0, 19.5, bleu[1], 100, beam=1 if greedy_largest else 4)]
    PointLibrary(points, space.name, origin, {"cpu": "toy"}, 1, fitness, space.to_dict()).save(tmp_path / "lib.yml")
    return space


def test_one_rule_splits_every_population() -> None:
    hat = EvolutionSettings.for_population(125, iterations=30)
    assert (hat.parents, hat.mutations, hat.crossovers) == (25, 50, 50) and hat == EvolutionSettings()
    small = EvolutionSettings.for_population(40, iterations=10)
    assert (small.parents, small.mutations, small.crossovers) == (8, 16, 16)
    assert EvolutionSettings.for_population(5, iterations=1).parents == 2
    odd = EvolutionSettings.for_population(50, 9, iterations=1)
    assert (odd.parents, odd.mutations, odd.crossovers) == (9, 20, 21)


def test_constraints_spread_from_just_above_the_fastest_to_the_largest(tmp_path: Path) -> None:
    space = toy_parts(tmp_path)[0].space
    lo, hi = smallest(space).decoder_layer_num * 10.0, largest(space).decoder_layer_num * 10.0
    assert constraints_between(WidthPredictor(), space, 3) == (round(lo * 1.05, 1), round((lo * 1.05 + hi) / 2, 1),
                                                               hi)
    assert constraints_between(WidthPredictor(), space, 1) == (round(lo * 1.05, 1),)


def test_an_added_point_is_verified_as_the_search_verifies(tmp_path: Path) -> None:
    model, vocab, library = toy_parts(tmp_path)
    lines = [" ".join(str(t) for t in range(4 + i, 9 + i)) for i in range(8)]
    corpus = ParallelCorpus(lines, lines, "en", "de", "toy")
    library.fitness = {"valid_sentences": 6, "seed": 1, "precision": "float32", "bleu_split": "val",
                       "bleu_sentences": 4}
    library.points = [p for p in library.points if p.config != middle(model.space)]
    with pytest.raises(ConfigError, match="no point nope"):
        find_point(library, "nope", "lib.yml")
    point = add_point(library, middle(model.space), model, vocab, WidthPredictor(), corpus, corpus, runs=3)
    assert library.points[-1] is point and point.id == middle(model.space).id
    with LossFitness(model, vocab, validation_subset(corpus, 6, 1), precision="float32") as fitness:
        assert point.valid_loss == fitness(point.config)
    assert point.predicted_ms == middle(model.space).decoder_layer_num * 10.0
    assert point.constraint_ms == np.ceil(point.measured_ms) and point.params > 0 and point.bleu is not None
    with pytest.raises(ConfigError, match="already in the library"):
        add_point(library, middle(model.space), model, vocab, WidthPredictor(), corpus, corpus, runs=3)


def test_the_scenario_targets(tmp_path: Path) -> None:
    library = toy_parts(tmp_path)[2]
    translator = SimpleNamespace(points=[library.points[0], library.points[2]], quality_rank=[1, 0])
    small, large = translator.points[0].id, translator.points[1].id

    def run(points_ms: list[tuple[str, float]], budget: float, switch_ms: list[float]) -> list[PhaseReport]:
        results = [TranslationResult("a b", p, 0, ms, ms, budget, ms <= budget, 2, 2, False, None, 1.0)
                   for p, ms in points_ms]
        return [PhaseReport("only", budget, results, ["a b"] * len(results), switch_ms)]

    experiment = Experiment({
        "dynamic": run([(large, 5.0)] * 19 + [(small, 5.0)], 10.0, [0.2]),
        f"static {small}": run([(small, 5.0)] * 20, 10.0, []),
        f"static {large}": run([(large, 50.0)] * 20, 10.0, []),
    })
    met = [t.met for t in check_targets(experiment, translator)]
    # within budget; the best point alone is not; switches fast; adapts at once; but no BLEU gain over the
    # reliable static point (every run writes the same text)
    assert met == [True, True, False, True, True]


@pytest.mark.shared_data
def test_points_add_verb_adds_a_verified_point_to_a_library(tmp_path: Path, data_dir: Path) -> None:
    from helpers.toy_checkpoint import toy_checkpoint

    from dynhat.cli import main
    from dynhat.io import file_sha256
    from dynhat.latency.hat_predictor import HatPredictor
    from dynhat.latency.table import LatencyTable

    space = toy_checkpoint(tmp_path / "toy.pt")[0].space
    rng = np.random.default_rng(0)
    features = rng.uniform(1, 600, (40, 10))
    HatPredictor(steps=5, seed=0).fit(LatencyTable(features, features[:, 0] / 10, features[:, 4] / 10, np.zeros(40),
                                                  np.zeros(40), "toy.csv")).save(tmp_path / "predictor.pt")
    origin = {"path": str(tmp_path / "toy.pt"), "sha256": file_sha256(tmp_path / "toy.pt")}
    fitness = {"valid_sentences": 4, "seed": 0, "precision": "float32", "bleu_split": "val", "bleu_sentences": 3}

    def library(configs, name: str) -> Path:
        points = [OperatingPoint(c, 10.0 * (i + 1), 9.0, 3.0, 9.5, 1.0, 100) for i, c in enumerate(configs)]
        PointLibrary(points, space.name, origin, {"cpu": "toy"}, 1, fitness, space.to_dict()).save(tmp_path / name)
        return tmp_path / name

    base, other = library([smallest(space)], "base.yml"), library([largest(space)], "other.yml")
    args = ["points", "add", str(tmp_path / "toy.pt"), str(base), "--source", str(other), "--id",
            largest(space).id, "--predictor", str(tmp_path / "predictor.pt"), "--runs", "2", "--out",
            str(tmp_path / "new.yml"), "--from", str(data_dir / "multi30k"), "--cache-dir", str(tmp_path / "cache")]
    assert main(args) == 0
    added = PointLibrary.load(tmp_path / "new.yml", checkpoint=tmp_path / "toy.pt", space=space)
    assert sorted(p.id for p in added.points) == sorted([smallest(space).id, largest(space).id])
    new = next(p for p in added.points if p.id == largest(space).id)  # the library keeps its points by latency
    assert new.measured_ms > 0 and new.constraint_ms == np.ceil(new.measured_ms)
    assert main([*args[:7], "nope", *args[8:]]) == 2  # an id the source library does not hold


@pytest.mark.shared_data
def test_points_int8_verb_scores_every_point_in_int8(tmp_path: Path, data_dir: Path) -> None:
    from dynhat.cli import main

    space = _toy_library(tmp_path, (1.0, 2.0), {"bleu_split": "val", "bleu_sentences": 3})
    args = ["points", "int8", str(tmp_path / "toy.pt"), str(tmp_path / "lib.yml"), "--out", str(tmp_path / "q.yml"),
            "--from", str(data_dir / "multi30k"), "--cache-dir", str(tmp_path / "cache")]
    assert main(args) == 0
    scored = PointLibrary.load(tmp_path / "q.yml", checkpoint=tmp_path / "toy.pt", space=space)
    assert [p.bleu for p in scored.sorted()] == [1.0, 2.0]
    assert all(p.bleu_int8 is not None and 0 <= p.bleu_int8 <= 100 for p in scored.points)
    assert main([*args[:2], str(tmp_path / "other.pt"), *args[3:]]) == 2  # no such checkpoint


@pytest.mark.shared_data
def test_points_bleu_verb_moves_a_librarys_bleu_to_validation_sentences(tmp_path: Path, data_dir: Path) -> None:
    from dynhat.cli import main
    from dynhat.data.fetch import load_multi30k
    from dynhat.inference.checkpoint import load_trained
    from dynhat.search.decoding import point_bleu
    from dynhat.search.operating_points import first_sentences

    space = _toy_library(tmp_path, (91.0, 92.0), {"test_sentences": 3})  # its BLEU on test
    points = PointLibrary.load(tmp_path / "lib.yml", space=space).sorted()
    args = ["points", "bleu", str(tmp_path / "toy.pt"), str(tmp_path / "lib.yml"), "--sentences", "5", "--out",
            str(tmp_path / "val.yml"), "--from", str(data_dir / "multi30k"), "--cache-dir", str(tmp_path / "cache")]
    assert main(args) == 0
    scored = PointLibrary.load(tmp_path / "val.yml", checkpoint=tmp_path / "toy.pt", space=space)
    assert scored.bleu_set() == ("val", 5) and "test_sentences" not in scored.fitness
    assert scored.commands == [shlex.join(["dynhat", *args])]  # how the file was made, to make it again
    model, vocab = load_trained(tmp_path / "toy.pt")
    val = first_sentences(load_multi30k("val", data_dir / "multi30k"), 5)
    assert [p.bleu for p in scored.sorted()] == [point_bleu(model, vocab, p.config, val, p.beam) for p in points]
    with pytest.raises(SystemExit):
        main([*args[:4], "--split", "train", *args[4:]])  # not a split to score on

    # a development set of one's own: what the served points are then ranked on, and int8 BLEU measured on
    val = first_sentences(load_multi30k("val", data_dir / "multi30k"), 4)
    (tmp_path / "dev.en").write_text("\n".join(val.src) + "\n")
    (tmp_path / "dev.de").write_text("\n".join(val.tgt) + "\n")
    own = ["points", "bleu", str(tmp_path / "toy.pt"), str(tmp_path / "lib.yml"), "--src", str(tmp_path / "dev.en"),
           "--ref", str(tmp_path / "dev.de"), "--out", str(tmp_path / "own.yml")]
    assert main(own) == 0
    mine = PointLibrary.load(tmp_path / "own.yml", checkpoint=tmp_path / "toy.pt", space=space)
    assert mine.bleu_set() == (str(tmp_path / "dev.en"), None)
    assert [p.bleu for p in mine.sorted()] == [point_bleu(model, vocab, p.config, val, p.beam) for p in points]
    int8 = ["points", "int8", str(tmp_path / "toy.pt"), str(tmp_path / "own.yml"), "--out", str(tmp_path / "own8.yml")]
    assert main(int8) == 0  # the files, no Multi30k folder needed
    made = PointLibrary.load(tmp_path / "own8.yml", space=space).commands
    assert made == [shlex.join(["dynhat", *own]), shlex.join(["dynhat", *int8])]  # each step, in order
    assert main([*own[:4], "--split", "val", *own[4:]]) == 2  # files or a split, not both


@pytest.mark.shared_data
def test_scenario_verb_streams_the_split_it_is_given(tmp_path: Path, data_dir: Path) -> None:
    import json

    import yaml

    from dynhat.cli import main

    _toy_library(tmp_path, (1.0, 2.0), {}, greedy_largest=False)
    (tmp_path / "phases.yml").write_text(yaml.safe_dump({"threads": 1, "budget_factor": 1.0, "phases": [
        {"name": "all", "sentences": 3}]}))
    texts = {}
    for split in ("test_2016_flickr", "test_2017_flickr"):
        assert main(["scenario", str(tmp_path / "toy.pt"), "--points", str(tmp_path / "lib.yml"), "--scenario",
                     str(tmp_path / "phases.yml"), "--split", split, "--no-static", "--calibrate-runs", "1",
                     "--out-dir", str(tmp_path / split), "--from", str(data_dir / "multi30k"), "--cache-dir",
                     str(tmp_path / "cache")]) == 0
        results = json.loads((tmp_path / split / "report.json").read_text())["runs"]["dynamic"][0]["results"]
        texts[split] = [r["src_tokens"] for r in results]
        assert len(results) == 3
    assert texts["test_2016_flickr"] != texts["test_2017_flickr"]  # another stream


def test_a_librarys_bleu_sentences_are_checked(tmp_path: Path) -> None:
    from dynhat.recipes.points import bleu_sentences

    lib = PointLibrary([], "toy", {"path": "x", "sha256": "0"}, {"cpu": "x"}, 1, {"bleu_split": "dev"})
    with pytest.raises(ConfigError, match=r"fitness: bleu_split: expected one of .* got 'dev'"):
        bleu_sentences(lib, tmp_path)
    lib.fitness = {"bleu_split": "val", "bleu_sentences": 0}
    with pytest.raises(ConfigError, match="bleu_sentences: expected a positive integer or none, got 0"):
        bleu_sentences(lib, tmp_path)
    lib.fitness = {"bleu_files": ["dev.en"]}
    with pytest.raises(ConfigError, match=r"bleu_files: expected \[source file, reference file\]"):
        bleu_sentences(lib, tmp_path)
