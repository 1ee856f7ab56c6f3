"""Release folders: safetensors weights, no pickle on the load path, every file checked against the manifest."""

from __future__ import annotations

import json

import pytest
import torch
from helpers.toy_checkpoint import LINES, toy_checkpoint

from dynhat.cli import main
from dynhat.errors import DataError
from dynhat.inference.checkpoint import load_trained
from dynhat.inference.points import file_sha256
from dynhat.inference.release import export_checkpoint, is_release, load_release
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
