"""Engine folders: a library's points exported to CTranslate2 and served by a process that never imports torch."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap
from dataclasses import replace

import pytest
from helpers.toy_checkpoint import LINES, toy_checkpoint

from dynhat.cli import main
from dynhat.errors import DataError
from dynhat.inference.points import OperatingPoint, PointLibrary, file_sha256
from dynhat.search.evolution import EvolutionSettings, evolve
from dynhat.space import largest, sample, smallest

pytest.importorskip("ctranslate2")

from dynhat.inference.ct2 import check_expressible, expressible
from dynhat.inference.engine import export_engine, is_engine, load_engine

SERVE_WITHOUT_TORCH = textwrap.dedent("""
    import json, sys
    from fastapi.testclient import TestClient
    from dynhat.inference.engine import load_engine
    from dynhat.runtime.costs import PointCost, calibrate
    from dynhat.runtime.dynamic import DynamicTranslator
    from dynhat.runtime.service import create_app

    engine = load_engine(sys.argv[1])
    points = engine.library.efficient()
    backend = engine.backend(threads=2)  # each model loaded at 1 and at 2 threads: the count adapts
    calibrated = calibrate(None, engine.vocab, points, 2, runs=2, backend=backend)
    assert calibrated.points == [p.id for p in points] and sorted(calibrated.by_threads) == [1, 2]
    # the toy points take about as long as each other: given costs make the smaller one the faster
    costs = [PointCost(1.0 * (i + 1), 1.0 * (i + 1)) for i in range(len(points))]
    translator = DynamicTranslator(None, engine.vocab, engine.library, 60_000.0, costs={1: costs, 2: costs},
                                   threads=2, backend=backend)
    client = TestClient(create_app(translator))
    served = {}
    for budget in (60_000.0, 1e-3):
        reply = client.post("/translate", json={"sentences": json.loads(sys.argv[2]), "budget_ms": budget})
        served[str(budget)] = reply.json()["translations"]
    alone = {p.id: backend.translator(p).translate(json.loads(sys.argv[2])) for p in points}
    print(json.dumps({"torch": "torch" in sys.modules, "served": served, "alone": alone}))
""")


def _library(checkpoint, model, out, configs) -> None:  # type: ignore[no-untyped-def]
    points = [OperatingPoint(c, 10.0 * (i + 1), 9.0 * (i + 1), 5.0 - i, 9.5 * (i + 1), beam=1)
              for i, c in enumerate(configs)]
    PointLibrary(points, model.space.name, {"path": str(checkpoint), "sha256": file_sha256(checkpoint)},
                 {"cpu": "test"}, 1, space_definition=model.space.to_dict()).save(out)


def test_an_engine_folder_serves_the_library_without_torch(tmp_path) -> None:
    model, _ = toy_checkpoint(tmp_path / "toy.pt")
    configs = [expressible(smallest(model.space)), expressible(largest(model.space))]
    _library(tmp_path / "toy.pt", model, tmp_path / "points.yml", configs)
    out = export_engine(tmp_path / "toy.pt", tmp_path / "points.yml", tmp_path / "engine", quantization="float32")
    assert is_engine(out) and not is_engine(tmp_path)
    engine = load_engine(out)
    assert [p.id for p in engine.library.efficient()] == [c.id + "-b1" for c in configs]
    assert engine.quantization == "float32" and engine.meta["source"]["sha256"] == file_sha256(tmp_path / "toy.pt")
    sentences = LINES[:4]
    run = subprocess.run([sys.executable, "-c", SERVE_WITHOUT_TORCH, str(out), json.dumps(sentences)],
                         capture_output=True, text=True, check=True)
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["torch"] is False
    # the service answers with the point its budget allows, as that point's engine translates alone
    for budget, config in (("60000.0", configs[-1]), ("0.001", configs[0])):
        assert [t["text"] for t in report["served"][budget]] == report["alone"][config.id + "-b1"]
        assert {t["point"] for t in report["served"][budget]} == {config.id + "-b1"}


def test_an_engine_export_refuses_what_ctranslate2_cannot_express_and_checks_its_files(tmp_path) -> None:
    model, _ = toy_checkpoint(tmp_path / "toy.pt")
    arbitrary = replace(expressible(largest(model.space)), decoder_arbitrary_ende_attn=(2, 2))
    _library(tmp_path / "toy.pt", model, tmp_path / "bad.yml", [expressible(smallest(model.space)), arbitrary])
    with pytest.raises(DataError, match=rf"point {arbitrary.id}-b1: .*decoder_arbitrary_ende_attn"):
        export_engine(tmp_path / "toy.pt", tmp_path / "bad.yml", tmp_path / "refused")
    assert not (tmp_path / "refused" / "points").exists()
    _library(tmp_path / "toy.pt", model, tmp_path / "points.yml", [expressible(smallest(model.space))])
    out = export_engine(tmp_path / "toy.pt", tmp_path / "points.yml", tmp_path / "engine")
    assert load_engine(out).quantization == "int8"
    weights = next((out / "points").glob("*/model.bin"))
    weights.write_bytes(weights.read_bytes()[:-1])
    with pytest.raises(DataError, match=r"model\.bin: sha256 .* does not match the manifest"):
        load_engine(out)
    with pytest.raises(DataError, match="not an engine folder"):
        load_engine(tmp_path)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("data")
    with pytest.raises(DataError, match="not an engine folder; give an empty or new folder"):
        export_engine(tmp_path / "toy.pt", tmp_path / "points.yml", tmp_path / "other")
    assert (tmp_path / "other" / "keep.txt").read_text() == "data"


def test_expressible_configurations_pass_the_export_check(tmp_path) -> None:
    model, _ = toy_checkpoint(tmp_path / "toy.pt")
    rng = random.Random(0)
    for _ in range(20):
        config = expressible(sample(model.space, rng))
        config.validate(model.space)
        check_expressible(model.weights(config))
        assert expressible(config) == config


def test_the_search_keeps_to_the_sub_space_it_is_given(tmp_path) -> None:
    model, _ = toy_checkpoint(tmp_path / "toy.pt")
    settings = EvolutionSettings.for_population(8, 2, iterations=3, seed=0)

    def loss(c):  # type: ignore[no-untyped-def]
        return -sum(c.encoder_self_attention_heads) - sum(c.decoder_ende_attention_heads)  # prefers mixed heads

    found = evolve(model.space, loss, lambda c: float(c.decoder_layer_num), 2.0, settings, progress=False,
                   project=expressible)
    assert found.config == expressible(found.config)
    check_expressible(model.weights(found.config))


def test_the_cli_exports_an_engine_and_serve_checks_its_arguments(tmp_path, capsys) -> None:
    model, _ = toy_checkpoint(tmp_path / "toy.pt")
    _library(tmp_path / "toy.pt", model, tmp_path / "points.yml", [expressible(smallest(model.space))])
    assert main(["export", str(tmp_path / "toy.pt"), "--engine", "ctranslate2", "--points",
                 str(tmp_path / "points.yml"), "--out-dir", str(tmp_path / "engine"), "--bleu-splits", ""]) == 0
    assert "dynhat serve" in capsys.readouterr().out and is_engine(tmp_path / "engine")
    assert main(["export", str(tmp_path / "toy.pt"), "--engine", "ctranslate2", "--out-dir",
                 str(tmp_path / "e2")]) == 2
    assert "--points" in capsys.readouterr().err
    points = str(tmp_path / "points.yml")
    assert main(["serve", str(tmp_path / "engine"), "--budget-ms", "100", "--points", points]) == 2
    assert "serves its own points.yml" in capsys.readouterr().err


def test_decoding_variants_share_one_loaded_model(tmp_path) -> None:
    from dynhat.inference.ct2 import export_points
    from dynhat.runtime.backends import CT2Backend

    model, vocab = toy_checkpoint(tmp_path / "toy.pt")
    config = expressible(largest(model.space))
    points = [OperatingPoint(config, 10.0, 9.0, 4.0, 9.5, beam=1), OperatingPoint(config, 20.0, 19.0, 4.0, 19.5)]
    assert len(export_points(model, vocab, points, tmp_path / "ct2")) == 1
    backend = CT2Backend(vocab, points, tmp_path / "ct2", threads=2)
    greedy, beam = (backend.translator(p) for p in points)
    assert greedy.engine is beam.engine and (greedy.beam, beam.beam) == (1, 4)
    one = greedy.translate(LINES[:3])
    with backend.pinned(2):  # the copies loaded at 2 threads, shared by the variants as well
        assert greedy.engine is beam.engine is greedy.engines[2] is not greedy.engines[1]
        assert greedy.translate(LINES[:3]) == one
    assert backend.threads == 1 and greedy.engine is greedy.engines[1]
    with pytest.raises(DataError, match="loaded for up to 2 threads, not 3"):
        backend.set_threads(3)


def test_translate_takes_an_engine_folder_and_needs_no_torch(tmp_path) -> None:
    model, _ = toy_checkpoint(tmp_path / "toy.pt")
    configs = [expressible(smallest(model.space)), expressible(largest(model.space))]
    _library(tmp_path / "toy.pt", model, tmp_path / "points.yml", configs)
    out = export_engine(tmp_path / "toy.pt", tmp_path / "points.yml", tmp_path / "engine")
    engine = load_engine(out)
    assert engine.point("fastest").config == configs[0] and engine.point("best").config == configs[1]
    assert engine.point(configs[1].id) == engine.point("best")
    with pytest.raises(DataError, match="no point 'nope'"):
        engine.point("nope")
    blocked = "import sys; sys.modules['torch'] = None; from dynhat.cli import main; sys.exit(main(sys.argv[1:]))"
    for name in ("fastest", "best"):
        run = subprocess.run([sys.executable, "-c", blocked, "translate", str(out), "--config", name],
                             input="\n".join(LINES[:3]) + "\n", capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        expected = engine.translator(engine.point(name)).translate(LINES[:3])
        assert run.stdout.splitlines() == expected


def test_evaluate_scores_an_engine_point_on_the_users_files(tmp_path, capsys) -> None:
    model, _ = toy_checkpoint(tmp_path / "toy.pt")
    _library(tmp_path / "toy.pt", model, tmp_path / "points.yml", [expressible(largest(model.space))])
    out = export_engine(tmp_path / "toy.pt", tmp_path / "points.yml", tmp_path / "engine")
    (tmp_path / "src.txt").write_text("\n".join(LINES[:3]) + "\n")
    (tmp_path / "ref.txt").write_text("\n".join(LINES[:3]) + "\n")
    assert main(["evaluate", str(out), "--config", "best", "--src", str(tmp_path / "src.txt"), "--ref",
                 str(tmp_path / "ref.txt"), "--output", str(tmp_path / "hyp.txt")]) == 0
    printed = capsys.readouterr().out
    assert "CTranslate2 int8, beam 1" in printed and "BLEU" in printed
    engine = load_engine(out)
    expected = engine.translator(engine.point("best")).translate(LINES[:3])
    assert (tmp_path / "hyp.txt").read_text().splitlines() == expected
