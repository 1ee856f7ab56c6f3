"""Release folders: safetensors weights, no pickle on the load path, every file checked against the manifest."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from helpers.toy_checkpoint import LINES, toy_checkpoint

from dynhat.cli import main
from dynhat.errors import DataError
from dynhat.inference.checkpoint import load_trained
from dynhat.inference.points import OperatingPoint, PointLibrary, checkpoint_sha256, file_sha256
from dynhat.inference.release import export_checkpoint, is_release, load_release, released_with
from dynhat.space import largest, smallest


def _outputs(model, config) -> torch.Tensor:
    src = torch.tensor([[5, 9, 12, 7, 2], [6, 11, 2, 1, 1]])
    prev = torch.tensor([[2, 8, 10, 4], [2, 13, 4, 1]])
    with torch.inference_mode():
        return model(src, prev, config=config)


def test_a_release_computes_what_its_checkpoint_computes(tmp_path, monkeypatch) -> None:
    model, vocab = toy_checkpoint(tmp_path / "toy.pt")
    exact = export_checkpoint(tmp_path / "toy.pt", tmp_path / "fp32", dtype="fp32")
    small = export_checkpoint(tmp_path / "toy.pt", tmp_path / "bf16", dtype="bf16", name="toy-en-de")
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("a release must load without torch.load"))
    for config in (smallest(model.space), largest(model.space)):
        loaded, loaded_vocab = load_release(exact)
        torch.testing.assert_close(_outputs(loaded, config), _outputs(model, config), atol=0, rtol=0)
        rounded, _ = load_release(small)
        torch.testing.assert_close(_outputs(rounded, config), _outputs(model, config), atol=0.05, rtol=0.05)
    assert loaded_vocab.encode(LINES[0]) == vocab.encode(LINES[0])
    assert loaded.decoder.embed_tokens.weight is loaded.encoder.embed_tokens.weight  # still one shared table
    facts = json.loads((small / "model.json").read_text())
    assert facts["updates"] == 7 and facts["name"] == "toy-en-de" and facts["dtype"] == "bf16"
    card = (small / "card.md").read_text()
    assert card.startswith("# toy-en-de") and "updates: 7" in card
    assert (small / "model.safetensors").stat().st_size < (exact / "model.safetensors").stat().st_size * 0.6


def test_a_changed_file_is_refused_naming_it(tmp_path) -> None:
    toy_checkpoint(tmp_path / "toy.pt")
    out = export_checkpoint(tmp_path / "toy.pt", tmp_path / "rel", dtype="fp32")
    assert is_release(out) and not is_release(tmp_path / "toy.pt")
    before = file_sha256(out)
    weights = out / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"model\.safetensors: sha256 .* does not match the manifest"):
        load_release(out)
    (out / "space.yml").unlink()
    (out / "model.safetensors").write_bytes(b"")
    with pytest.raises(DataError, match=r"missing|does not match"):
        load_release(out)
    assert file_sha256(out) == before  # a folder is identified by its manifest
    with pytest.raises(DataError, match="not found"):
        load_release(tmp_path / "nowhere")


def test_every_verb_takes_a_release_folder(tmp_path, capsys) -> None:
    toy_checkpoint(tmp_path / "toy.pt")
    assert main(["export", str(tmp_path / "toy.pt"), "--out-dir", str(tmp_path / "rel")]) == 0
    assert "manifest.json" in capsys.readouterr().out
    model, _ = load_trained(tmp_path / "rel")
    assert (model.space.encoder_layers, model.space.decoder_layers) == (3, 2)  # the toy space, from space.yml
    (tmp_path / "in.txt").write_text(LINES[0] + "\n")
    assert main(["translate", str(tmp_path / "rel"), "--config", "smallest", "--beam", "1",
                 "--input", str(tmp_path / "in.txt")]) == 0
    assert capsys.readouterr().out.count("\n") == 1


def _toy_library(checkpoint, model, out) -> None:
    """A reference library of the toy checkpoint: its smallest and largest SubTransformer (the largest won two
    constraints), and a greedy variant."""
    points = [OperatingPoint(smallest(model.space), 10.0, 9.0, 5.0, 9.5, 1.5, 100),
              OperatingPoint(largest(model.space), 20.0, 19.0, 4.0, 19.5, 2.5, 200),
              OperatingPoint(largest(model.space), 30.0, 19.0, 4.0, 19.8, 2.5, 200),
              OperatingPoint(largest(model.space), 20.0, None, 4.0, 12.0, 2.0, 200, beam=1)]
    PointLibrary(points, model.space.name, {"path": str(checkpoint), "sha256": file_sha256(checkpoint)},
                 {"cpu": "toy CPU", "logical_cores": 2, "torch": "x"}, 1, {"bleu_split": "val", "bleu_sentences": 8},
                 model.space.to_dict()).save(out)


def test_the_card_states_each_points_bleu_per_split_the_command_and_every_sha256(tmp_path) -> None:
    model, _ = toy_checkpoint(tmp_path / "toy.pt")
    _toy_library(tmp_path / "toy.pt", model, tmp_path / "points.yml")
    scored = []

    def score(rounded, _vocab, point) -> dict[str, float]:
        scored.append(point.id)
        weight = rounded.encoder.embed_tokens.weight
        assert torch.equal(weight, weight.to(torch.bfloat16).float())  # scored on the weights that ship
        return {"test_2016_flickr": 30.0 + point.beam, "test_2017_flickr": 20.0 + point.beam}

    command = "torchrun --nproc-per-node 2 -m dynhat train --config toy.yml --run-dir runs/toy"
    out = export_checkpoint(tmp_path / "toy.pt", tmp_path / "rel", points=tmp_path / "points.yml",
                            train_command=command, score=score)
    assert sorted(scored) == sorted({p.id for p in PointLibrary.load(tmp_path / "points.yml").points})
    card = (out / "card.md").read_text()
    assert card.count(f"| {largest(model.space).id} | ") == 1  # each point once, at its tightest constraint
    assert f"| {largest(model.space).id} | best | 2 | 4 | 19.5 |" in card  # served as: the name it selects by
    assert "| BLEU test_2016_flickr | BLEU test_2017_flickr |" in card
    assert "*library* on the first 8 val sentences (what ranks the served points)" in card
    assert f"| {largest(model.space).id}-b1 | middle | 2 | 1 | 12.0 | 2.0 | 31.0 | 21.0 |" in card
    assert f"| {smallest(model.space).id} | fastest | 1 | 4 | 9.5 | 1.5 | 34.0 | 24.0 |" in card
    assert "`dynhat translate rel --point best`" in card
    assert "## Reproduce" in card and command in card and "toy CPU" in card
    assert f"--out-dir {tmp_path / 'rel'} --dtype bf16 --points {tmp_path / 'points.yml'}" in card
    manifest = json.loads((out / "manifest.json").read_text())["sha256"]
    for name, digest in manifest.items():
        assert name == "card.md" or f"| `{name}` | `{digest}` |" in card
    assert json.loads((out / "model.json").read_text())["train_command"] == command
    load_release(out)  # the card is in the manifest: the folder still checks


def test_a_release_holds_its_library_for_serving_and_translating_by_point_name(tmp_path, capsys) -> None:
    from dynhat.inference.release import library_path, release_library

    model, _ = toy_checkpoint(tmp_path / "toy.pt")
    _toy_library(tmp_path / "toy.pt", model, tmp_path / "points.yml")
    out = export_checkpoint(tmp_path / "toy.pt", tmp_path / "rel", points=tmp_path / "points.yml")
    assert release_library(out) == library_path(out, None) == out / "points.yml"
    assert "points.yml" in json.loads((out / "manifest.json").read_text())["sha256"]
    shipped = PointLibrary.load(out / "points.yml", checkpoint=out)  # pinned by the manifest beside it
    assert [p.id for p in shipped.points] == [p.id for p in PointLibrary.load(tmp_path / "points.yml").points]
    (tmp_path / "copy.yml").write_bytes((out / "points.yml").read_bytes())
    with pytest.raises(DataError, match="belong to checkpoint"):  # the same file elsewhere: the checkpoint's
        PointLibrary.load(tmp_path / "copy.yml", checkpoint=out)
    assert main(["points", "show", str(out)]) == 0  # the names --point takes
    assert main(["points", "bleu", str(out), str(out), "--out", str(out / "points.yml")]) == 2  # pinned by manifest
    listed = capsys.readouterr().out
    assert "3 points, 3 served" in listed and f"fastest {smallest(model.space).id}\n" in listed
    assert f"middle  {largest(model.space).id}-b1\n" in listed and f"best    {largest(model.space).id}\n" in listed
    (tmp_path / "in.txt").write_text(LINES[0] + "\n" + LINES[1] + "\n")
    assert main(["translate", str(out), "--point", "middle", "--input", str(tmp_path / "in.txt")]) == 0
    by_point = capsys.readouterr().out
    assert main(["translate", str(out), "--config", "largest", "--beam", "1", "--input", str(tmp_path / "in.txt")]) == 0
    assert by_point == capsys.readouterr().out  # middle: the largest SubTransformer at beam 1
    assert main(["translate", str(tmp_path / "toy.pt"), "--point", "best", "--input", str(tmp_path / "in.txt")]) == 2
    assert "holds no operating-point library" in capsys.readouterr().err
    assert main(["serve", str(tmp_path / "toy.pt"), "--budget-ms", "100"]) == 2
    assert "give --points" in capsys.readouterr().err
    (out / "points.yml").write_text("changed")
    with pytest.raises(DataError, match=r"points\.yml: sha256 .* does not match the manifest"):
        release_library(out)
    export_checkpoint(tmp_path / "toy.pt", out)  # re-exported without a library: none left behind
    assert release_library(out) is None and not (out / "points.yml").exists()


def test_a_release_re_exported_with_a_library_searched_on_it_keeps_its_weights_and_facts(tmp_path, capsys) -> None:
    toy_checkpoint(tmp_path / "toy.pt")
    first = export_checkpoint(tmp_path / "toy.pt", tmp_path / "first" / "toy-en-de")
    released, _ = load_release(first)
    _toy_library(first, released, tmp_path / "points.yml")  # searched on the release, not on the checkpoint
    again = export_checkpoint(first, tmp_path / "again" / "toy-en-de", points=tmp_path / "points.yml",
                              train_command="dynhat train --config toy.yml",
                              score=lambda *_: {"test_2016_flickr": 1.0})
    assert (again / "model.safetensors").read_bytes() == (first / "model.safetensors").read_bytes()
    facts = json.loads((again / "model.json").read_text())
    before = json.loads((first / "model.json").read_text())
    assert facts == before | {"train_command": "dynhat train --config toy.yml", "released_with": facts["released_with"]}
    assert facts["updates"] == 7 and "Operating points" in (again / "card.md").read_text()
    assert facts["released_with"] == [f"dynhat export {first} --out-dir {tmp_path / 'again' / 'toy-en-de'} "
                                      f"--dtype bf16 --points {tmp_path / 'points.yml'}"]
    third = export_checkpoint(again, tmp_path / "third", points=again / "points.yml")  # the library it holds
    commands = json.loads((third / "model.json").read_text())["released_with"]
    assert commands[0] == facts["released_with"][0]
    assert commands[1] == (f"dynhat export {again} --out-dir {tmp_path / 'third'} --dtype bf16 "
                           f"--points {again / 'points.yml'}")
    assert "\n".join(commands) in (third / "card.md").read_text()  # the Reproduce section: every step
    # a library that records the commands that made it: they come before the export that ships it
    library = PointLibrary.load(third / "points.yml")
    rescored = replace(library, checkpoint={"path": str(third), "sha256": checkpoint_sha256(third)}).made_by(
        f"dynhat points bleu {third} {third} --out {tmp_path / 'val.yml'}")  # as that verb writes it
    rescored.save(tmp_path / "val.yml")
    fourth = export_checkpoint(third, tmp_path / "fourth", points=tmp_path / "val.yml")
    export = f"dynhat export {third} --out-dir {tmp_path / 'fourth'} --dtype bf16 --points {tmp_path / 'val.yml'}"
    assert json.loads((fourth / "model.json").read_text())["released_with"] == [*commands, *rescored.commands, export]
    assert PointLibrary.load(fourth / "points.yml").commands == rescored.commands  # the release's library keeps them
    capsys.readouterr()
    assert main(["points", "show", str(fourth)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"made by: {rescored.commands[-1]}"


def test_released_with_lists_each_command_once_where_it_ran() -> None:
    assert released_with(["export A"], ["search", "bleu"], "export B") == ["export A", "search", "bleu", "export B"]
    assert released_with(["export A"], ["search", "search"], "export A") == ["search", "export A"]  # again
    assert released_with(["search", "export A"], ["search", "bleu"], "export B") == [
        "search", "export A", "bleu", "export B"]


def test_a_card_without_a_command_says_how_to_reproduce_from_the_settings(tmp_path) -> None:
    toy_checkpoint(tmp_path / "toy.pt")
    card = (export_checkpoint(tmp_path / "toy.pt", tmp_path / "rel") / "card.md").read_text()
    assert "Save `training_settings` above as `train.yml`" in card and "dynhat train --config train.yml" in card
    assert "Operating points" not in card


def test_export_refuses_an_unknown_split_before_writing(tmp_path, capsys) -> None:
    model, _ = toy_checkpoint(tmp_path / "toy.pt")
    _toy_library(tmp_path / "toy.pt", model, tmp_path / "points.yml")
    assert main(["export", str(tmp_path / "toy.pt"), "--out-dir", str(tmp_path / "rel"), "--points",
                 str(tmp_path / "points.yml"), "--bleu-splits", "test_2099", "--cache-dir", str(tmp_path)]) == 2
    assert "--bleu-splits: unknown Multi30k test split 'test_2099'" in capsys.readouterr().err
    assert not (tmp_path / "rel" / "manifest.json").exists()


def test_pretrained_loads_a_shipped_release_by_name(tmp_path, monkeypatch) -> None:
    import dynhat
    from dynhat.inference import release

    model, vocab = toy_checkpoint(tmp_path / "toy.pt")
    export_checkpoint(tmp_path / "toy.pt", tmp_path / "shipped" / "multi30k-en-de", dtype="fp32")
    monkeypatch.setattr(release, "releases_root", lambda: tmp_path / "shipped")
    assert dynhat.shipped_releases() == ["multi30k-en-de"]
    loaded, loaded_vocab = dynhat.pretrained()
    torch.testing.assert_close(_outputs(loaded, largest(model.space)), _outputs(model, largest(model.space)))
    assert loaded_vocab.encode(LINES[1]) == vocab.encode(LINES[1])
    assert load_trained("multi30k-en-de")[0].space.to_dict() == model.space.to_dict()  # every verb: by name
    with pytest.raises(DataError, match=r"no shipped release 'nope' .*shipped are multi30k-en-de"):
        dynhat.pretrained("nope")
    (tmp_path / "shipped" / "multi30k-en-de" / "vocab.model").write_bytes(b"changed")
    with pytest.raises(DataError, match=r"vocab\.model: sha256 .* does not match the manifest"):
        dynhat.pretrained("multi30k-en-de")


def test_import_dynhat_is_cheap() -> None:
    code = "import sys, dynhat; assert callable(dynhat.__getattr__); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


@pytest.mark.shared_data
def test_the_split_scorer_scores_every_sentence_of_a_real_split(data_dir, tmp_path) -> None:
    from dynhat.recipes.release import split_scorer

    model, vocab = toy_checkpoint(tmp_path / "toy.pt")
    score = split_scorer(["test_2017_flickr"], str(tmp_path / "cache"), data_dir / "multi30k", progress=False)
    point = OperatingPoint(smallest(model.space), 10.0, 9.0, 5.0, 9.5, beam=1)
    scores = score(model, vocab, point)
    assert list(scores) == ["test_2017_flickr"] and 0.0 <= scores["test_2017_flickr"] < 5.0  # random weights


def test_a_library_names_a_shipped_release_by_its_manifest(tmp_path) -> None:
    from dynhat.inference.points import checkpoint_sha256
    from dynhat.inference.release import release_dir, shipped_releases

    name = shipped_releases()[0]
    assert checkpoint_sha256(name) == file_sha256(release_dir(name) / "manifest.json")
    space = load_release(name)[0].space
    PointLibrary([OperatingPoint(smallest(space), 10.0, 9.0, 5.0, 9.5)], space.name,
                 {"path": name, "sha256": checkpoint_sha256(name)}, {"cpu": "test"}, 1,
                 space_definition=space.to_dict()).save(tmp_path / "points.yml")
    assert PointLibrary.load(tmp_path / "points.yml", checkpoint=name).points[0].config == smallest(space)
    with pytest.raises(DataError, match="belong to checkpoint"):
        PointLibrary.load(tmp_path / "points.yml", checkpoint=release_dir(name) / "model.safetensors")


def test_the_shipped_release_holds_the_library_its_card_lists() -> None:
    from dynhat.inference.release import release_library, shipped_releases

    for name in shipped_releases():
        library = PointLibrary.load(release_library(name), checkpoint=name)
        card = (release_library(name).parent / "card.md").read_text()
        assert all(f"| {p.id} | " in card for p in library.unique())
        served = library.efficient()
        assert len(served) >= 3 and library.select("best") == served[-1]
