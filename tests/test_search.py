"""Search: HAT's evolution (constraint kept, cache, errors instead of hangs), NSGA-II front, point libraries."""

from __future__ import annotations

import random
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml
from helpers.toy_train import TOY_SPACE, VOCAB

from dynhat.cli import main
from dynhat.data.corpus import ParallelCorpus
from dynhat.errors import ConfigError, DataError, DynhatError
from dynhat.inference.points import OperatingPoint, PointLibrary
from dynhat.io import file_sha256
from dynhat.model import ModelSettings, SuperTransformer
from dynhat.search import (
    EvolutionSettings,
    FrontPoint,
    LossFitness,
    evolve,
    non_dominated,
    pareto_search,
    pick,
    validation_subset,
)
from dynhat.space import DesignSpace, SubTransformerConfig, load_space
from dynhat.space.cost import count_macs, count_params
from dynhat.space.sampling import largest, sample, smallest
from dynhat.train.trainer import validation_loss

SMALL = EvolutionSettings(population=20, parents=4, mutations=8, crossovers=8, iterations=6)


@pytest.fixture(scope="module")
def space() -> DesignSpace:
    return load_space("multi30k-cpu")


def macs_ms(space: DesignSpace):  # a deterministic stand-in latency: proportional to the exact MAC count
    return lambda c: count_macs(c, space, 8000) / 1e6


def neg_params(space: DesignSpace):  # a known objective: more parameters is better
    return lambda c: -count_params(c, space, 8000).total / 1e6


def test_evolution_keeps_the_constraint_and_beats_random_sampling(space: DesignSpace) -> None:
    latency, score = macs_ms(space), neg_params(space)
    lo, hi = latency(smallest(space)), latency(largest(space))
    constraint = lo + 0.4 * (hi - lo)
    calls: list[str] = []

    def counted(c: SubTransformerConfig) -> float:
        calls.append(c.id)
        return score(c)

    cache: dict[str, float] = {}

    def cached(c: SubTransformerConfig) -> float:
        if c.id not in cache:
            cache[c.id] = counted(c)
        return cache[c.id]

    result = evolve(space, cached, latency, constraint, SMALL, progress=False)
    assert result.latency_ms <= constraint
    assert result.history == sorted(result.history, reverse=True)  # best-so-far never worsens
    rng = random.Random(1)
    feasible = [c for c in (sample(space, rng) for _ in range(3000)) if latency(c) <= constraint]
    assert result.loss <= min(score(c) for c in feasible[: len(set(calls))])
    assert len(calls) == len(set(calls))


def test_infeasible_constraint_is_an_error_not_a_hang(space: DesignSpace) -> None:
    latency = macs_ms(space)
    with pytest.raises(ConfigError, match="below the fastest"):
        evolve(space, neg_params(space), latency, 0.5 * latency(smallest(space)), SMALL, progress=False)
    barely = latency(smallest(space)) * 1.0001  # feasible, but random draws almost never meet it
    with pytest.raises(DynhatError, match="too tight"):
        evolve(space, neg_params(space), latency, barely, EvolutionSettings(
            population=20, parents=4, mutations=8, crossovers=8, iterations=3, max_draws=5), progress=False)


def test_patience_stops_early(space: DesignSpace) -> None:
    settings = EvolutionSettings(population=20, parents=4, mutations=8, crossovers=8, iterations=30, patience=2)
    result = evolve(space, lambda c: 1.0, macs_ms(space), 1e9, settings, progress=False)
    assert result.iterations == 3


def test_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="parents \\+ mutations \\+ crossovers"):
        EvolutionSettings(population=100)


def test_pareto_front_is_non_dominated_and_picks_per_constraint(space: DesignSpace) -> None:
    latency, score = macs_ms(space), neg_params(space)
    front = pareto_search(space, score, latency, population=24, generations=6, progress=False)
    assert len(front) >= 3
    for a in front:
        assert not any(b.latency_ms <= a.latency_ms and b.loss < a.loss and b is not a for b in front)
    mid = front[len(front) // 2]
    chosen = pick(front, mid.latency_ms)
    assert chosen is not None and chosen.latency_ms <= mid.latency_ms and chosen.loss <= mid.loss
    assert pick(front, front[0].latency_ms * 0.5) is None


def test_non_dominated_by_hand() -> None:
    c = smallest(load_space("multi30k-cpu"))
    pts = [FrontPoint(c, 3.0, 10.0), FrontPoint(c, 2.0, 20.0), FrontPoint(c, 2.5, 30.0), FrontPoint(c, 1.0, 40.0)]
    assert [(p.loss, p.latency_ms) for p in non_dominated(pts)] == [(3.0, 10.0), (2.0, 20.0), (1.0, 40.0)]


@pytest.fixture
def toy(tmp_path: Path) -> tuple[SuperTransformer, DesignSpace]:
    path = tmp_path / "toy.yml"
    path.write_text(yaml.safe_dump(TOY_SPACE))
    space = load_space(path)
    torch.manual_seed(0)
    return SuperTransformer(space, ModelSettings(vocab_size=VOCAB)), space


class _Vocab:  # the toy vocabulary: whitespace-separated integer ids
    def encode(self, text: str) -> list[int]:
        return [int(t) for t in text.split()]


class _TextVocab(_Vocab):  # ... that also writes ids back as text, for BLEU
    eos, pad = 2, 1

    def decode(self, ids) -> str:
        return " ".join(str(i) for i in ids)


def _toy_tests() -> ParallelCorpus:
    """Six test pairs of the toy vocabulary (each sentence its own reference)."""
    lines = [" ".join(str(t) for t in range(4 + i, 9 + i)) for i in range(6)]
    return ParallelCorpus(lines, lines, "en", "de", "toy")


def test_loss_fitness_is_the_validation_loss_and_cached(toy) -> None:
    model, space = toy
    rng = random.Random(0)
    lines = [" ".join(str(rng.randrange(4, VOCAB)) for _ in range(rng.randrange(2, 7))) for _ in range(30)]
    corpus = ParallelCorpus(lines, lines, "en", "de", "toy")
    subset = validation_subset(corpus, 12, seed=3)
    assert len(subset) == 12 and set(subset.src) <= set(corpus.src)
    fitness = LossFitness(model, _Vocab(), subset, precision="float32")
    a, b = largest(space), smallest(space)
    first = fitness(a)
    assert first == validation_loss(model, fitness.batches, a, 0.1)[0]
    assert fitness(a) == first and fitness(b) != first
    assert (fitness.evaluations, fitness.hits) == (2, 1)
    half = LossFitness(model, _Vocab(), subset, precision="bfloat16")  # autocast: close, not equal
    assert half(a) == pytest.approx(first, abs=0.05) and half.precision == "bfloat16"
    assert LossFitness(model, _Vocab(), subset).precision in ("float32", "bfloat16")
    with pytest.raises(ValueError, match="precision"):
        LossFitness(model, _Vocab(), subset, precision="fp8")


def test_worker_processes_score_a_generation_as_one_process_does(toy) -> None:
    model, space = toy
    rng = random.Random(1)
    lines = [" ".join(str(rng.randrange(4, VOCAB)) for _ in range(rng.randrange(2, 7))) for _ in range(20)]
    corpus = ParallelCorpus(lines, lines, "en", "de", "toy")
    configs = [sample(space, rng) for _ in range(5)]
    generation = configs + configs[:2]  # repeats within a generation are scored once
    alone = LossFitness(model, _Vocab(), corpus, precision="float32")
    with LossFitness(model, _Vocab(), corpus, precision="float32", workers=2) as pooled:
        assert pooled.many(generation) == alone.many(generation)
        assert (pooled.evaluations, pooled.hits) == (alone.evaluations, alone.hits) == (5, 2)
        assert pooled.many(configs[:3]) == alone.many(configs[:3]) and pooled.evaluations == 5
        assert pooled._pool is not None
    assert pooled._pool is None  # closed on leaving the block
    with pytest.raises(ValueError, match="workers"):
        LossFitness(model, _Vocab(), corpus, workers=0)


def test_point_library_round_trip_and_checkpoint_check(tmp_path: Path, space: DesignSpace) -> None:
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"weights")
    points = [OperatingPoint(largest(space), 200.0, 150.0, 3.2, 160.0, 30.1, 1000),
              OperatingPoint(smallest(space), 80.0, 60.0, 3.9, 61.0, 25.0, 500)]
    lib = PointLibrary(points, "multi30k-cpu", {"path": str(ckpt), "sha256": file_sha256(ckpt)},
                       {"cpu": "x", "logical_cores": 2, "torch": "2"}, 1, {"valid_sentences": 10})
    lib.made_by("dynhat search model.pt --out points.yml").made_by(None).save(tmp_path / "points.yml")
    back = PointLibrary.load(tmp_path / "points.yml", checkpoint=ckpt)
    assert [p.id for p in back.points] == [smallest(space).id, largest(space).id]  # fastest first
    assert back.points[1].measured_ms == 160.0 and back.points[1].bleu == 30.1
    assert back.commands == ["dynhat search model.pt --out points.yml"] and lib.commands == []
    text = (tmp_path / "points.yml").read_text()
    (tmp_path / "bad.yml").write_text(text.replace("- dynhat search model.pt --out points.yml", "  run: 3"))
    with pytest.raises(ConfigError, match=r"bad\.yml.*commands.*expected a list of command lines"):
        PointLibrary.load(tmp_path / "bad.yml")
    ckpt.write_bytes(b"other weights")
    with pytest.raises(DataError, match="belong to checkpoint"):
        PointLibrary.load(tmp_path / "points.yml", checkpoint=ckpt)
    with pytest.raises(ConfigError):
        PointLibrary.load(tmp_path / "points.yml", space=load_space("hat-wmt14-en-de"))


def test_reduction_keeps_the_used_choices_and_shrinks_the_supertransformer(space: DesignSpace) -> None:
    from dynhat.search.reduce import reduce_space, usage
    from dynhat.space.sampling import from_gene, to_gene

    small = smallest(space)
    mid = from_gene(to_gene(small, space), space)  # same config through the gene round trip
    used = usage(space, [small, mid])
    by_dim = {u.dimension: u for u in used}
    assert by_dim["decoder_layer_num_choice"].used == (1,)
    assert by_dim["encoder_embed_choice"].dropped == (256,)
    reduced = reduce_space(space, [small, largest(space)], name="r")
    assert reduced.name == "r" and reduced.decoder_layer_num_choice == (6, 1)
    assert reduced.encoder_embed_dim == 256 and reduced.num_configurations() < space.num_configurations()
    only_small = reduce_space(space, [small])
    assert only_small.encoder_embed_dim == 192 and only_small.decoder_layers == 1
    assert only_small.num_configurations() == 1
    small.validate(only_small)
    with pytest.raises(ConfigError, match="no operating points"):
        usage(space, [])


def test_a_tight_constraint_near_the_fastest_still_searches(space: DesignSpace) -> None:
    latency = macs_ms(space)
    tight = latency(smallest(space)) * 1.03  # uniform samples almost never get this fast
    result = evolve(space, neg_params(space), latency, tight, SMALL, progress=False)
    assert result.latency_ms <= tight


def test_library_of_a_reduced_space_carries_its_space(tmp_path: Path, space: DesignSpace) -> None:
    from dynhat.search.reduce import reduce_space

    reduced = reduce_space(space, [smallest(space)], name="only-small")  # not a shipped name, no YAML file
    lib = PointLibrary([OperatingPoint(smallest(reduced), 80.0, 60.0, 3.9)], reduced.name,
                       {"path": "x", "sha256": "0"}, {"cpu": "x"}, 1, space_definition=reduced.to_dict())
    lib.save(tmp_path / "points.yml")
    back = PointLibrary.load(tmp_path / "points.yml")
    assert back.design_space() == reduced
    assert back.points[0].config == smallest(reduced)
    lib.space_definition = None  # a library without the definition needs a space by name or path
    lib.save(tmp_path / "bare.yml")
    with pytest.raises(ConfigError, match="only-small"):
        PointLibrary.load(tmp_path / "bare.yml")


def test_decoding_variants_round_trip_and_the_efficient_points(tmp_path: Path, space: DesignSpace, capsys) -> None:
    small, large = smallest(space), largest(space)
    points = [OperatingPoint(small, 80.0, 60.0, 3.9, 61.0), OperatingPoint(large, 200.0, 150.0, 3.2, 160.0),
              OperatingPoint(small, 80.0, None, 3.9, 30.0, beam=1),
              OperatingPoint(large, 200.0, None, 3.2, 55.0, beam=1)]  # faster and better than small at beam 4
    assert [p.id for p in points[2:]] == [f"{small.id}-b1", f"{large.id}-b1"]
    lib = PointLibrary(points, "multi30k-cpu", {"path": "x", "sha256": "0"}, {"cpu": "x"}, 1)
    assert [(p.id, p.beam) for p in lib.efficient()] == [(f"{small.id}-b1", 1), (f"{large.id}-b1", 1),
                                                         (large.id, 4)]
    lib.save(tmp_path / "points.yml")
    back = PointLibrary.load(tmp_path / "points.yml")
    assert sorted((p.id, p.beam, p.predicted_ms) for p in back.points) == sorted(
        (p.id, p.beam, p.predicted_ms) for p in points)
    text = (tmp_path / "points.yml").read_text()
    (tmp_path / "old.yml").write_text(text.replace("  beam: 4\n", ""))  # files of earlier versions: beam 4
    assert sorted(p.beam for p in PointLibrary.load(tmp_path / "old.yml").points) == [1, 1, 4, 4]
    (tmp_path / "bad.yml").write_text(text.replace("  beam: 1\n", "  beam: 0\n", 1))
    with pytest.raises(ConfigError, match=r"points\[\d\]: beam: expected a whole number >= 1 and <= 64, got 0"):
        PointLibrary.load(tmp_path / "bad.yml")
    poisons = [("  beam: 1\n", "  beam: 1000000000\n", "beam: expected a whole number >= 1 and <= 64"),
               ("  valid_loss: ", "  valid_loss: .nan #", "valid_loss: expected a finite number"),
               ("  constraint_ms: ", "  constraint_ms: fast #", "constraint_ms: expected a finite number"),
               ("  predicted_ms: ", "  predicted_ms: -3 #", "predicted_ms: expected a finite number > 0"),
               ("threads: 1", "threads: true", "threads: expected a whole number >= 1")]
    for old, new, message in poisons:
        (tmp_path / "poison.yml").write_text(text.replace(old, new, 1))
        with pytest.raises(ConfigError, match=re.escape(message)):
            PointLibrary.load(tmp_path / "poison.yml")
    (tmp_path / "mixed.yml").write_text(text.replace(f"id: {large.id}-b1", f"id: {large.id}"))
    with pytest.raises(ConfigError, match="configuration and beam"):
        PointLibrary.load(tmp_path / "mixed.yml")
    # named points (what `dynhat points config` writes for `train --fixed-config`)
    assert [back.select(n).id for n in ("fastest", "middle", "best", large.id)] == [
        f"{small.id}-b1", f"{large.id}-b1", large.id, large.id]
    with pytest.raises(DataError, match="no point 'nope'"):
        back.select("nope")
    assert main(["points", "show", str(tmp_path / "points.yml")]) == 0  # no BLEU, no measured latency: dashes
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == 2 + len(points) and listed[2].split()[:5] == ["80.0", "-", "30.00", "3.9000", "-"]
    assert main(["points", "config", str(tmp_path / "points.yml"), "--point", "fastest",
                 "--out", str(tmp_path / "fastest.yml")]) == 0
    assert SubTransformerConfig.from_yaml(tmp_path / "fastest.yml") == small


def test_with_bleu_on_every_point_the_served_points_are_ranked_by_it(space: DesignSpace) -> None:
    small, large = smallest(space), largest(space)
    bleu = {(small.id, 4): 30.0, (large.id, 4): 34.0, (small.id, 1): 28.0, (large.id, 1): 29.0}
    points = [OperatingPoint(small, 80.0, 60.0, 3.9, 61.0), OperatingPoint(large, 200.0, 150.0, 3.2, 160.0),
              OperatingPoint(small, 80.0, None, 3.9, 30.0, beam=1),
              OperatingPoint(large, 200.0, None, 3.2, 55.0, beam=1)]
    scored = [replace(p, bleu=bleu[p.config.id, p.beam]) for p in points]
    lib = PointLibrary(scored, "multi30k-cpu", {"path": "x", "sha256": "0"}, {"cpu": "x"}, 1)
    # the small SubTransformer at beam 4 translates better than the large one's greedy variant (lower loss)
    assert [p.id for p in lib.efficient()] == [f"{small.id}-b1", f"{large.id}-b1", small.id, large.id]
    assert lib.select("best").id == large.id and lib.quality(scored[0]) < lib.quality(scored[3])
    partly = replace(lib, points=[*scored[:3], points[3]])  # one point without BLEU: ranked by loss
    assert [p.id for p in partly.efficient()] == [f"{small.id}-b1", f"{large.id}-b1", large.id]
    assert partly.select(small.id) is scored[0]  # by id any point, served or not


def test_add_variants_verifies_each_subtransformer_at_the_new_beam(toy) -> None:
    from dynhat.search.decoding import add_variants, point_bleu

    model, space = toy
    model.eval()
    tests = _toy_tests()

    small, large = smallest(space), largest(space)
    lib = PointLibrary([OperatingPoint(small, 10.0, 9.0, 3.0, 9.5), OperatingPoint(large, 20.0, 19.0, 2.0, 19.5),
                        OperatingPoint(large, 30.0, 19.0, 2.0, 19.5)], "toy", {"path": "x", "sha256": "0"},
                       {"cpu": "x"}, 1)
    out = add_variants(lib, model, _TextVocab(), tests, beams=(1, 4), runs=3, src_len=5, tgt_len=5, progress=False)
    added = out.points[len(lib.points):]
    # one variant per SubTransformer and new beam (the beam-4 points exist, the large one won two constraints)
    assert sorted(p.id for p in added) == sorted([f"{small.id}-b1", f"{large.id}-b1"])
    for p in added:
        assert p.beam == 1 and p.predicted_ms is None and p.measured_ms > 0
        assert p.bleu == point_bleu(model, _TextVocab(), p.config, tests, 1)
        assert p.valid_loss == (3.0 if p.config == small else 2.0)
    assert next(p for p in added if p.config == large).constraint_ms == 20.0  # the tightest it won
    with pytest.raises(ValueError, match="beams"):
        add_variants(lib, model, _TextVocab(), tests, beams=(0,), progress=False)


def test_rescored_bleu_reranks_the_served_points_and_records_its_sentences(toy) -> None:
    from dynhat.recipes.points import with_bleu_set
    from dynhat.search.decoding import point_bleu, rescore_bleu

    model, space = toy
    model.eval()
    small, large = smallest(space), largest(space)
    # an older library: its BLEU on test_2016_flickr, the small point ranked best by it
    lib = PointLibrary([OperatingPoint(small, 10.0, 9.0, 3.0, 9.5, 99.0, bleu_int8=98.0),
                        OperatingPoint(large, 20.0, 19.0, 2.0, 19.5, 1.0, bleu_int8=1.0)],
                       "toy", {"path": "x", "sha256": "0"}, {"cpu": "x"}, 1, {"valid_sentences": 4,
                                                                              "test_sentences": 200})
    assert lib.bleu_set() == ("test_2016_flickr", 200) and [p.id for p in lib.efficient()] == [small.id]
    sentences = _toy_tests()
    moved = with_bleu_set(lib, 6, "val")
    assert moved.bleu_set() == ("val", 6) and moved.fitness == {"valid_sentences": 4, "bleu_split": "val",
                                                                "bleu_sentences": 6}
    assert with_bleu_set(lib, None, files=["dev.en", "dev.de"]).bleu_set() == ("dev.en", None)
    out = rescore_bleu(moved, model, _TextVocab(), sentences, progress=False)
    assert out.fitness == moved.fitness
    for p in out.points:
        assert p.bleu == point_bleu(model, _TextVocab(), p.config, sentences, p.beam)
        assert p.bleu_int8 is not None and p.bleu_int8 != 98.0  # measured again, on the same sentences
    ranked = sorted(out.points, key=out.quality)
    assert [p.id for p in out.efficient()][-1] == ranked[0].id  # served best: the best on the new sentences
    assert lib.points[0].bleu == 99.0  # the library given is left as it was


def test_int8_bleu_sits_beside_each_points_bleu_and_round_trips(toy, tmp_path: Path) -> None:
    from dynhat.model.quantized import Int8Model
    from dynhat.search.decoding import add_int8_bleu, point_bleu

    model, space = toy
    model.eval()
    tests = _toy_tests()

    small, large = smallest(space), largest(space)
    lib = PointLibrary([OperatingPoint(small, 10.0, 9.0, 3.0, 9.5, 12.5), OperatingPoint(large, 20.0, 19.0, 2.0, 19.5),
                        OperatingPoint(large, 30.0, 19.0, 2.0, 19.5), OperatingPoint(large, 20.0, None, 2.0, 9.0,
                                                                                     beam=1)],
                       "toy", {"path": "x", "sha256": "0"}, {"cpu": "x"}, 1)
    out = add_int8_bleu(lib, model, _TextVocab(), tests, progress=False)
    assert [p.bleu for p in out.points] == [p.bleu for p in lib.points]  # float32 BLEU kept
    for p in out.points:
        assert p.bleu_int8 == point_bleu(Int8Model(model, [p.config]), _TextVocab(), p.config, tests, p.beam)
    out.save(tmp_path / "lib.yml")
    text = (tmp_path / "lib.yml").read_text()
    assert text.count("bleu_int8:") == 4 and "bleu_int8" not in lib.points[0].to_dict()
    back = PointLibrary.load(tmp_path / "lib.yml", space=space)
    assert [p.bleu_int8 for p in back.sorted()] == [p.bleu_int8 for p in out.sorted()]
    (tmp_path / "bad.yml").write_text(text.replace("bleu_int8: ", "bleu_int8: 101 #", 1))
    with pytest.raises(ConfigError, match=r"points\[0\]: bleu_int8: expected a finite number >= 0 and <= 100"):
        PointLibrary.load(tmp_path / "bad.yml", space=space)
