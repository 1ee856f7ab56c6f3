from __future__ import annotations

import gzip

import yaml
from helpers.toy_checkpoint import LINES, toy_checkpoint

from dynhat.cli import main
from dynhat.data.corpus import write_lines
from dynhat.space import largest, load_space


def test_space_info(capsys) -> None:
    assert main(["space", "info", "hat-wmt14-en-de"]) == 0
    out = capsys.readouterr().out
    assert "417,846,678,672,384" in out and "decoder-arbitrary-ende-attn-choice" in out and "qkv-dim" in out


def test_config_check_valid_and_invalid(tmp_path, capsys) -> None:
    config = largest(load_space("multi30k-cpu"))
    good = tmp_path / "good.yml"
    config.save_yaml(good)
    assert main(["config", "check", str(good), "--space", "multi30k-cpu"]) == 0
    out = capsys.readouterr().out
    assert config.id in out and "parameters: 13,107,200 total" in out and "multiply-accumulates" in out
    bad = tmp_path / "bad.yml"
    bad.write_text(yaml.safe_dump(config.to_dict() | {"decoder-embed-dim-subtransformer": 300}))
    assert main(["config", "check", str(bad), "--space", "multi30k-cpu"]) == 2
    err = capsys.readouterr().err
    assert "bad.yml" in err and "decoder-embed-dim-subtransformer: 300 is not in the space's choices [256, 192]" in err


def test_unknown_space_is_a_clear_error(capsys) -> None:
    assert main(["space", "info", "nope"]) == 2
    assert "not a shipped space name" in capsys.readouterr().err


def test_evaluate_scores_any_file_pair(tmp_path, capsys) -> None:
    toy_checkpoint(tmp_path / "toy.pt")
    lines = LINES
    (tmp_path / "src.en.gz").write_bytes(gzip.compress("\n".join(lines[:4]).encode() + b"\n"))
    write_lines(tmp_path / "ref.de", lines[:4])
    args = ["evaluate", str(tmp_path / "toy.pt"), "--config", "smallest", "--beam", "2"]
    assert main([*args, "--src", str(tmp_path / "src.en.gz"), "--ref", str(tmp_path / "ref.de"),
                 "--output", str(tmp_path / "hyp.de")]) == 0
    out = capsys.readouterr().out
    assert f"loss on {tmp_path / 'ref.de'}" in out and "BLEU" in out
    assert len((tmp_path / "hyp.de").read_text().splitlines()) == 4
    write_lines(tmp_path / "short.de", lines[:3])
    assert main([*args, "--src", str(tmp_path / "src.en.gz"), "--ref", str(tmp_path / "short.de")]) == 2
    assert "misaligned corpus" in capsys.readouterr().err
    assert main([*args, "--src", str(tmp_path / "src.en.gz")]) == 2
    assert "--src and --ref go together" in capsys.readouterr().err


def test_every_failure_is_one_line_and_an_exit_code(tmp_path, capsys, monkeypatch) -> None:
    import dynhat.cli.space_cmd as space_cmd

    binary = tmp_path / "binary.yml"
    binary.write_bytes(b"\x00\xff\xfe binary")
    assert main(["config", "check", str(binary), "--space", "hat-wmt14-en-de"]) == 2
    assert capsys.readouterr().err.strip().endswith("not UTF-8 text (byte 1); a SubTransformer YAML was expected")
    for raised, code, text in ((ValueError("beam must be positive"), 2, "dynhat: error: beam must be positive"),
                               (RuntimeError("boom"), 1, "internal error, a bug: please report it"),
                               (KeyboardInterrupt(), 130, "interrupted")):
        def fail(_args: object, exc: BaseException = raised) -> int:
            raise exc

        monkeypatch.setattr(space_cmd, "_space_info", fail)
        assert main(["space", "info", "multi30k-cpu"]) == code
        err = capsys.readouterr().err
        assert text in err and "Traceback" not in err and err.count("\n") == 1


def test_evaluate_files_scores_a_gzip_pair_from_python(tmp_path) -> None:
    from dynhat.recipes.evaluate import evaluate_files

    model, vocab = toy_checkpoint(tmp_path / "toy.pt")
    (tmp_path / "src.en.gz").write_bytes(gzip.compress("\n".join(LINES[:3]).encode() + b"\n"))
    write_lines(tmp_path / "ref.de.gz", LINES[:3])
    result = evaluate_files(model, vocab, largest(model.space), tmp_path / "src.en.gz", tmp_path / "ref.de.gz", beam=1)
    assert len(result.hypotheses) == 3 and result.valid_loss is not None and result.bleu.sacrebleu >= 0
