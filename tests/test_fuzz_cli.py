"""Fuzzing the command line: every bad number and every bad file ends in one line on stderr and exit code 2.

Numbers: every numeric option of every command, given values outside its range, NaN, infinities and words.
Files: every file a command reads, given a missing path, a directory, an empty file, a file of another kind,
and random bytes (hypothesis). None may end in a traceback, an internal error (exit 1) or a silent success.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from helpers.toy_checkpoint import toy_checkpoint
from helpers.toy_runtime import toy_parts
from helpers.toy_train import TOY_SPACE
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dynhat.cli import build_parser, main


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...],
                                                                                                argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name), sub
                yield from _commands(sub, (*prefix, name))


def _poisons(bounds: tuple[float | None, float | None, bool], whole: bool) -> list[str]:
    low, high, strict = bounds
    out = ["nan", "inf", "-inf", "fast", "", "1e999"]
    if whole:
        out.append("1.5")
    if low is not None:
        out.append(f"{low:g}" if strict else f"{low - 1:g}")
    if high is not None:
        out.append(f"{high + 1:g}")
    return out


NUMERIC = [(command, flag, poison)
           for command, sub in _commands(build_parser())
           for action in sub._actions if hasattr(action.type, "bounds")
           for flag in action.option_strings[:1]
           for poison in _poisons(action.type.bounds, action.type.__name__ == "whole number")]


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    return err


def test_every_numeric_option_is_fuzzed() -> None:
    flags = {(command, flag) for command, flag, _ in NUMERIC}
    assert (("translate",), "--beam") in flags and (("serve",), "--budget-ms") in flags and len(flags) >= 40


@pytest.mark.parametrize(("command", "flag", "poison"), NUMERIC)
def test_a_bad_number_is_refused_in_one_line(command: tuple[str, ...], flag: str, poison: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main([*command, f"{flag}={poison}"])
    assert stop.value.code == 2
    assert flag in _one_line(capsys)


# ------------------------------------------------------------------------------------------------ files
@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("files")
    toy_checkpoint(root / "toy.pt")
    (root / "space.yml").write_text(yaml.safe_dump(TOY_SPACE))
    _, _, library = toy_parts(root)
    library.save(root / "points.yml")
    (root / "lines.txt").write_text("the red dog\n")
    return {"checkpoint": root / "toy.pt", "space": root / "space.yml", "points": root / "points.yml",
            "lines": root / "lines.txt", "out": root / "out"}


#: A command line per file a command reads; BAD marks the file under test, the other names are valid files.
FILE_SLOTS = [
    "translate BAD", "translate checkpoint --config BAD", "translate checkpoint --input BAD",
    "evaluate BAD --src lines --ref lines", "evaluate checkpoint --src BAD --ref lines",
    "evaluate checkpoint --src lines --ref BAD",
    "space info BAD", "config check BAD --space space", "config check BAD",
    "train --config BAD --run-dir out/train",
    "latency fit BAD --out out/p.pt", "latency predict BAD space",
    "search BAD --predictor BAD --constraints 10 --out out/s.yml",
    "variants checkpoint --points BAD --out out/v.yml", "reduce BAD --out out/r.yml",
    "scenario checkpoint --points BAD --out-dir out/sc", "scenario BAD --points points --out-dir out/sc",
    "serve BAD --points points --budget-ms 50", "serve checkpoint --points BAD --budget-ms 50",
    "export BAD --out-dir out/rel", "export checkpoint --points BAD --out-dir out/rel",
    "export-hat BAD --out-dir out/hat", "convert BAD --dict BAD --out out/c.pt",
    "data vocab --train-src BAD --train-tgt lines --out out/v.model",
]


TEXT_INPUTS = ("--input", "--src", "--ref", "--train-src")


def _argv(slot: str, bad: Path, files: dict[str, Path]) -> list[str]:
    return [str(bad) if word == "BAD" else str(files[word]) if word in files else
            str(files["out"] / word[4:]) if word.startswith("out/") else word for word in slot.split()]


def _bad_files(root: Path, files: dict[str, Path]) -> dict[str, Path]:
    (root / "a directory").mkdir(exist_ok=True)
    (root / "empty").write_bytes(b"")
    (root / "binary.yml").write_bytes(bytes(range(256)) * 4)
    return {"missing": root / "missing.pt", "directory": root / "a directory", "empty": root / "empty",
            "binary": root / "binary.yml", "other kind": files["lines"]}


def _refused_cleanly(argv: list[str], capsys: pytest.CaptureFixture[str], text: bool = False) -> None:
    """Exit 2 with one line; where the file is sentences, random bytes that decode as text may translate (exit 0)."""
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse, for a file argparse itself checks
        code = stop.code
    if text and code == 0:
        return
    assert code == 2, f"{argv}: exit {code}"
    _one_line(capsys)


@pytest.mark.parametrize("slot", FILE_SLOTS)
@pytest.mark.parametrize("kind", ["missing", "directory", "empty", "binary", "other kind"])
def test_a_bad_file_is_refused_in_one_line(slot: str, kind: str, files: dict[str, Path], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    bad = _bad_files(tmp_path, files)[kind]
    if kind == "other kind" and any(f"{flag} BAD" in slot for flag in TEXT_INPUTS):
        bad = files["checkpoint"]  # any text is a sentence: of another kind here means not text
    _refused_cleanly(_argv(slot, bad, files), capsys)


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(slot=st.sampled_from(FILE_SLOTS), raw=st.binary(max_size=300))
def test_random_bytes_in_any_file_are_refused_in_one_line(slot: str, raw: bytes, files: dict[str, Path],
                                                          tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "random.bin"
    bad.write_bytes(raw)
    _refused_cleanly(_argv(slot, bad, files), capsys, text=any(f"{flag} BAD" in slot for flag in TEXT_INPUTS))


def test_stdin_that_is_not_utf8_is_refused_naming_its_line(files: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    import io
    import sys

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"the red dog\nthe \xff dog\n")))
    _refused_cleanly(["translate", str(files["checkpoint"])], capsys)
