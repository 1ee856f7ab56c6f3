"""The inference core: serving imports no training or search, and a checkpoint that does not fit is refused with
the file, the key and what was expected."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.toy_checkpoint import toy_checkpoint

from dynhat.errors import DynhatError
from dynhat.inference.checkpoint import load_checkpoint, load_trained, save_checkpoint


def test_the_service_imports_no_trainer_no_search_no_pymoo() -> None:
    code = ("import sys, dynhat.runtime.service; "
            "print([m for m in sys.modules if m.startswith(('dynhat.train', 'dynhat.search', 'pymoo'))])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("ckpt") / "toy.pt"
    toy_checkpoint(path)
    return path, load_checkpoint(path)


def _rewrite(tmp_path: Path, payload: dict) -> Path:
    path = tmp_path / "edited.pt"
    save_checkpoint(path, {k: v for k, v in payload.items() if k != "format"})
    return path


def test_a_well_formed_checkpoint_loads(saved: tuple[Path, dict]) -> None:
    model, vocab = load_trained(saved[0])
    assert model.settings.vocab_size == len(vocab) and not model.training


@pytest.mark.parametrize(("edit", "message"), [
    (lambda p: p["model"].pop("encoder.layers.0.fc1.weight"),
     r"edited\.pt: model: encoder\.layers\.0\.fc1\.weight: missing .*expected shape \(32, 16\)"),
    (lambda p: p["model"].__setitem__("encoder.extra.weight", torch.zeros(2)),
     r"edited\.pt: model: encoder\.extra\.weight: unexpected"),
    (lambda p: p["model"].__setitem__("encoder.layers.0.fc1.weight", torch.zeros(32, 8)),
     r"edited\.pt: model: encoder\.layers\.0\.fc1\.weight: expected shape \(32, 16\), got shape \(32, 8\)"),
    (lambda p: p.__setitem__("vocab_size", p["vocab_size"] + 3),
     r"edited\.pt: vocab_size: \d+, but the stored vocabulary has \d+ entries"),
    (lambda p: p.pop("space"), r"edited\.pt: space: missing"),
    (lambda p: p.pop("vocab"), r"edited\.pt: vocab: missing"),
    (lambda p: p["settings"].pop("dropout"), r"edited\.pt: settings: dropout: missing"),
    (lambda p: p.__setitem__("vocab_size", "60"), r"edited\.pt: vocab_size: expected an integer, got str"),
])
def test_a_checkpoint_that_does_not_fit_is_a_user_error(saved: tuple[Path, dict], tmp_path: Path, edit,
                                                        message: str) -> None:
    payload = {k: (dict(v) if isinstance(v, dict) else v) for k, v in saved[1].items()}
    edit(payload)
    with pytest.raises(DynhatError, match=message):
        load_trained(_rewrite(tmp_path, payload))
