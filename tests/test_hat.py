"""HAT interop: fairseq dictionaries, HAT's text pipeline, HAT checkpoints in both directions, and the numerics
against HAT's own recorded outputs (the fixture in $DYNHAT_DATA/hat/reference, written by HAT's code)."""

from __future__ import annotations

import argparse
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.toy_train import TOY_SPACE

from dynhat.cli import main
from dynhat.data.corpus import ParallelCorpus
from dynhat.data.vocab import Vocabulary
from dynhat.errors import ConfigError, DataError
from dynhat.hat import FairseqDictionary, HatCheckpoint, HatVocabulary, load_hat_checkpoint, save_hat_checkpoint
from dynhat.hat.checkpoint import hat_args, hat_state_dict, read_hat_file
from dynhat.hat.dictionary import SPECIALS
from dynhat.inference.checkpoint import (
    load_checkpoint,
    load_trained,
    save_checkpoint,
    vocab_fields,
    vocab_from_checkpoint,
)
from dynhat.model import ModelSettings, SuperTransformer
from dynhat.space import DesignSpace, SubTransformerConfig, smallest
from dynhat.train.prepare import build_trainer
from dynhat.train.settings import TrainSettings

CONFIGS = ("largest", "smallest", "mix_a", "mix_b", "mix_c", "mix_d")
ATOL = 1e-5
WORDS = ["the", "house", "hou@@", "se", "&apos;s", "door", ".", "The"]


class _Custom:
    """A class no checkpoint should need to unpickle."""


def _random_model(space: dict | None = None, vocab_size: int = 24) -> SuperTransformer:
    """Every weight drawn at random, biases and LayerNorms included, so a dropped or swapped tensor shows."""
    torch.manual_seed(0)
    model = SuperTransformer(DesignSpace.from_dict(space or TOY_SPACE), ModelSettings(vocab_size=vocab_size))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    return model.eval()


def _same_space(a: DesignSpace, b: DesignSpace) -> bool:
    """Equal sizes and choices (HAT's args keep no space name)."""
    return replace(a, name="") == replace(b, name="")


def _save_hat(path: Path, args: argparse.Namespace, model: dict, **extra: object) -> Path:
    torch.save({"args": args, "model": model, **extra}, path)
    return path


# ------------------------------------------------------------------------------------------- dictionary and text
def test_dictionary_reads_fairseq_order_and_writes_it_back(tmp_path) -> None:
    text = "hello 5\nworld 3\na b 1\n"
    (tmp_path / "dict.en.txt").write_text(text)
    table = FairseqDictionary.load(tmp_path / "dict.en.txt")
    assert table.symbols[:4] == list(SPECIALS) == ["<s>", "<pad>", "</s>", "<unk>"]
    assert len(table) == 7 and table.index("hello") == 4 and table.index("a b") == 6 and table.index("nope") == 3
    assert table.to_text() == text
    assert table.decode(torch.tensor([0, 4, 1, 5, 2, 4])) == ["hello", "world"]
    with pytest.raises(ValueError, match="outside the dictionary"):
        table.decode([7])


@pytest.mark.parametrize(("text", "message"), [
    ("hello 5\nbroken\n", "line 2: expected '<symbol> <count>', got 'broken'"),
    ("hello 5\nworld x\n", "line 2: expected '<symbol> <count>'"),
    ("hello 5\n\nworld 3\n", "line 2: expected"),
    ("hello 5\nhello 2\n", "line 2: symbol 'hello' already has id 4"),
    ("<pad> 0\n", "line 1: symbol '<pad>' already has id 1"),
])  # fmt: skip
def test_dictionary_errors_name_file_and_line(tmp_path, text: str, message: str) -> None:
    path = tmp_path / "dict.de.txt"
    path.write_text(text)
    with pytest.raises(DataError, match=str(path)) as err:
        FairseqDictionary.load(path)
    assert message in str(err.value)
    with pytest.raises(DataError, match="dictionary file not found"):
        FairseqDictionary.load(tmp_path / "missing.txt")


def test_text_pipeline_moses_bpe_and_back(tmp_path) -> None:
    codes = "#version: 0.2\nt h\nth e</w>\nh o\nho u\ns e</w>\n"
    vocab = HatVocabulary(FairseqDictionary(WORDS), codes, "en", "en")
    assert vocab.tokenize("the house.") == ["the", "hou@@", "se", "."]
    ids = vocab.encode("the house.")
    assert ids == [4, 6, 7, 10] and vocab.encode("the cat") == [4, 3, 3, 3]  # c@@ a@@ t: unknown
    assert vocab.decode([*ids, vocab.eos, 5]) == "the house."
    assert (vocab.bos, vocab.pad, vocab.eos, vocab.unk, len(vocab)) == (0, 1, 2, 3, 12)
    whole_words = HatVocabulary(FairseqDictionary(WORDS), target_lang="en")  # Moses escapes, as tokenizer.perl does
    assert whole_words.tokenize("The house's door.") == ["The", "house", "&apos;s", "door", "."]
    assert whole_words.decode(whole_words.encode("The house's door.")) == "The house's door."
    (tmp_path / "codes").write_text("h o\nho u x\n")
    with pytest.raises(DataError, match="codes: line 2: expected two subword units"):
        HatVocabulary(FairseqDictionary(WORDS), (tmp_path / "codes").read_text(), source=str(tmp_path / "codes"))
    with pytest.raises(DataError, match="no merge operations"):
        HatVocabulary(FairseqDictionary(WORDS), "#version: 0.2\n")


def test_checkpoint_vocabulary_fields() -> None:
    vocab = HatVocabulary(FairseqDictionary(WORDS), "h o\n", "de", "en", aggressive_dash_splits=True)
    payload = vocab_fields(vocab)
    assert payload["vocab_kind"] == "fairseq" and isinstance(payload["vocab"]["dictionary"], str)
    back = vocab_from_checkpoint(payload, "x.pt")
    assert isinstance(back, HatVocabulary) and back.to_state() == vocab.to_state()
    with pytest.raises(DataError, match=r"x\.pt: vocab_kind 'bytes' is neither"):
        vocab_from_checkpoint({**payload, "vocab_kind": "bytes"}, "x.pt")
    with pytest.raises(DataError, match=r"x\.pt: vocab: expected a mapping"):
        vocab_from_checkpoint({**payload, "vocab": {"dictionary": "a 1\n"}}, "x.pt")


# ------------------------------------------------------------------------------------------- HAT checkpoints
def test_round_trip_dynhat_hat_dynhat_is_identical(tmp_path) -> None:
    model = _random_model()
    config = smallest(model.space)
    save_hat_checkpoint(tmp_path / "hat.pt", model, "en", "de", subtransformer=config)
    with torch.serialization.safe_globals([argparse.Namespace]):  # nothing else is pickled
        torch.load(tmp_path / "hat.pt", weights_only=True)
    hat = load_hat_checkpoint(tmp_path / "hat.pt")
    ours, theirs = model.state_dict(), hat.model.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert _same_space(hat.space, model.space) and hat.subtransformer == config
    assert (hat.source_lang, hat.target_lang) == ("en", "de")
    src = torch.tensor([[1, 5, 6, 2], [7, 8, 9, 2]])
    with torch.no_grad():
        assert torch.equal(model(src, src, config=config), hat.model(src, src, config=config))


def test_export_of_a_sentencepiece_model(tmp_path, capsys) -> None:
    """A model trained by dynhat goes to HAT with its pieces as the fairseq dictionary, in id order."""
    vocab = Vocabulary.train([f"the {w} dog runs" for w in ("red", "big", "old", "small")] * 5, 40)
    model = _random_model(vocab_size=len(vocab))
    save_checkpoint(tmp_path / "toy.pt", {"model": model.state_dict(), "space": model.space.to_dict(),
                                          "settings": TrainSettings().to_dict(), "vocab_size": len(vocab),
                                          **vocab_fields(vocab)})
    assert main(["export-hat", str(tmp_path / "toy.pt"), "--out-dir", str(tmp_path / "hat"),
                 "--config", "smallest"]) == 0
    assert {p.name for p in (tmp_path / "hat").iterdir()} == {"checkpoint.pt", "dict.en.txt", "dict.de.txt",
                                                               "sentencepiece.model", "subtransformer.yml"}
    table = FairseqDictionary.load(tmp_path / "hat" / "dict.de.txt")
    assert table.symbols == [vocab.sp.id_to_piece(i) for i in range(len(vocab))]
    hat = load_hat_checkpoint(tmp_path / "hat" / "checkpoint.pt")
    assert hat.subtransformer == SubTransformerConfig.from_yaml(tmp_path / "hat" / "subtransformer.yml")
    assert all(torch.equal(v, hat.model.state_dict()[k]) for k, v in model.state_dict().items())


def test_a_checkpoint_needing_another_global_is_refused(tmp_path) -> None:
    path = _save_hat(tmp_path / "evil.pt", argparse.Namespace(), {}, extra_state={"meter": _Custom()})
    with pytest.raises(DataError) as err:
        load_hat_checkpoint(path)
    assert str(path) in str(err.value) and f"{_Custom.__module__}._Custom" in str(err.value)
    assert "refused" in str(err.value)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match=r"junk\.pt: not a readable checkpoint"):
        load_hat_checkpoint(tmp_path / "junk.pt")
    torch.save({"cfg": {}}, tmp_path / "new.pt")
    with pytest.raises(DataError, match=r"not a HAT \(fairseq 0\.8\) checkpoint.*found \['cfg'\]"):
        load_hat_checkpoint(tmp_path / "new.pt")


def test_unsupported_hat_models_are_refused_by_name(tmp_path) -> None:
    model = _random_model()
    weights = hat_state_dict(model)
    cases = [({"share_all_embeddings": False}, "args.share_all_embeddings: is False"),
             ({"encoder_normalize_before": True}, "args.encoder_normalize_before: is True"),
             ({"arch": "transformer_wmt_en_de"}, "args.arch: 'transformer_wmt_en_de' is not one of HAT's"),
             ({"encoder_layer_num_choice": [3, 2]}, "encoder-layer-num-choice: encoder depths [3, 2]")]
    for change, message in cases:
        args = argparse.Namespace(**{**vars(hat_args(model, "en", "de", ".")), **change})
        with pytest.raises(ConfigError, match=r"bad\.pt") as err:
            load_hat_checkpoint(_save_hat(tmp_path / "bad.pt", args, weights))
        assert message in str(err.value)
    extra = {**weights, "decoder.embed_out": torch.zeros(24, 16)}
    with pytest.raises(DataError, match=r"model\.decoder\.embed_out: \[24, 16\] in the checkpoint; .* no such weight"):
        load_hat_checkpoint(_save_hat(tmp_path / "bad.pt", hat_args(model, "en", "de", "."), extra))
    no_embed = {k: v for k, v in weights.items() if k != "encoder.embed_tokens.weight"}
    with pytest.raises(DataError, match=r"model\.encoder\.embed_tokens\.weight is absent"):
        load_hat_checkpoint(_save_hat(tmp_path / "bad.pt", hat_args(model, "en", "de", "."), no_embed))
    no_space = argparse.Namespace(**{**vars(hat_args(model, "en", "de", ".")), "qkv_dim": None})
    with pytest.raises(ConfigError, match=r"args lack \['qkv_dim'\], so its design space is unknown"):
        load_hat_checkpoint(_save_hat(tmp_path / "bad.pt", no_space, weights))
    partial = argparse.Namespace(**{**vars(hat_args(model, "en", "de", ".")), "decoder_layer_num_subtransformer": 1})
    with pytest.raises(ConfigError, match=r"bad\.pt: args: missing required keys"):
        load_hat_checkpoint(_save_hat(tmp_path / "bad.pt", partial, weights))


def test_spaces_hat_would_run_differently_are_not_exported(tmp_path) -> None:
    shallow = {**TOY_SPACE, "encoder-layer-num-choice": [3, 2], "decoder-arbitrary-ende-attn-choice": [-1, 1]}
    with pytest.raises(ConfigError, match="attends to copies of the last active layer"):
        save_hat_checkpoint(tmp_path / "x.pt", _random_model(shallow), "en", "de")
    fixed_heads = {**TOY_SPACE, "head-dim": 4}
    with pytest.raises(ConfigError, match=r"head-dim: .* HAT's attention keeps qkv-dim fixed"):
        save_hat_checkpoint(tmp_path / "x.pt", _random_model(fixed_heads), "en", "de")
    with pytest.raises(ConfigError, match=r"normalize-before: .* pre-norm"):
        save_hat_checkpoint(tmp_path / "x.pt", _random_model({**TOY_SPACE, "normalize-before": True}), "en", "de")
    assert not (tmp_path / "x.pt").exists()
    only_last = {**TOY_SPACE, "encoder-layer-num-choice": [3, 2], "decoder-arbitrary-ende-attn-choice": [-1]}
    save_hat_checkpoint(tmp_path / "x.pt", _random_model(only_last), "en", "de")  # -1 agrees at every depth


def test_float16_weights_are_read_as_float32(tmp_path) -> None:
    model = _random_model()
    half = {k: v.half() for k, v in hat_state_dict(model).items()}
    loaded = load_hat_checkpoint(_save_hat(tmp_path / "fp16.pt", hat_args(model, "en", "de", "."), half)).model
    for key, value in model.state_dict().items():
        assert loaded.state_dict()[key].dtype == torch.float32
        assert torch.equal(loaded.state_dict()[key], value.half().float())


def test_training_resumes_with_its_vocabulary_but_not_from_a_converted_checkpoint(tmp_path, monkeypatch) -> None:
    DesignSpace.from_dict(TOY_SPACE).save_yaml(tmp_path / "toy.yml")
    settings = TrainSettings(space=str(tmp_path / "toy.yml"), vocab_size=30, max_updates=1)
    corpus = ParallelCorpus([f"the {w} dog runs" for w in ("red", "big", "old")] * 4,
                            [f"der {w} hund rennt" for w in ("rote", "grosse", "alte")] * 4, "en", "de", "toy")
    trainer, vocab = build_trainer(settings, tmp_path / "run", corpus, corpus)
    trainer.save()
    assert load_checkpoint(trainer.last_path)["vocab_kind"] == "sentencepiece"
    monkeypatch.setattr(Vocabulary, "train", None)  # resuming reads the vocabulary from checkpoint_last.pt
    assert build_trainer(settings, tmp_path / "run", corpus, corpus)[1] == vocab

    model = _random_model()
    save_hat_checkpoint(tmp_path / "hat.pt", model, "en", "de")
    FairseqDictionary([f"w{i}" for i in range(20)]).save(tmp_path / "dict.de.txt")
    assert main(["convert", str(tmp_path / "hat.pt"), "--dict", str(tmp_path / "dict.de.txt"),
                 "--out", str(tmp_path / "model.pt")]) == 0
    fork = replace(settings, init_from=str(tmp_path / "model.pt"))
    with pytest.raises(ConfigError, match=r"model\.pt: holds a model without training state"):
        build_trainer(fork, tmp_path / "fork", corpus, corpus)


# ------------------------------------------------------------------------------------------- HAT's own outputs
@pytest.fixture
def reference(data_dir: Path) -> Path:
    path = data_dir / "hat" / "reference"
    if not (path / "reference.npz").is_file():
        pytest.skip(f"HAT reference fixture not found at {path}")
    return path


@lru_cache(maxsize=1)
def _fixture_model(path: str) -> HatCheckpoint:
    return load_hat_checkpoint(path)


@lru_cache(maxsize=1)
def _recorded(path: str) -> dict[str, torch.Tensor]:
    with np.load(path, allow_pickle=False) as data:
        return {k: torch.from_numpy(data[k]) for k in data.files}


def max_differences(reference: Path, name: str) -> dict[str, float]:
    """Largest |dynhat - HAT| per recorded output of one configuration (logits only at non-pad inputs)."""
    model = _fixture_model(str(reference / "checkpoint_supertransformer.pt")).model
    ref = _recorded(str(reference / "reference.npz"))
    config = SubTransformerConfig.from_yaml(reference / "subtransformer" / f"{name}.yml")
    src, prev = ref["src_tokens"], ref["prev_output_tokens"]
    with torch.no_grad():
        enc = model.encode(src, config=config)
        logits = model(src, prev, config=config)
        state = model.init_state(model.encode(src[:1], config=config), config=config)
        steps = torch.stack([model.decode_step(token.view(1), state, config=config)[0]
                             for token in ref[f"{name}.greedy_prev_tokens"]])
    real = prev.ne(model.padding_idx)
    return {
        "encoder_out": float((enc.layers[-1] - ref[f"{name}.encoder_out"]).abs().max()),
        "encoder_out_all": float((torch.stack(enc.layers) - ref[f"{name}.encoder_out_all"]).abs().max()),
        "logits": float((logits - ref[f"{name}.logits"])[real].abs().max()),
        "greedy_logits": float((steps - ref[f"{name}.greedy_logits"]).abs().max()),
    }


@pytest.mark.shared_data
@pytest.mark.parametrize("name", CONFIGS)
def test_outputs_equal_hats_recorded_ones(reference: Path, name: str) -> None:
    """Left-padded batch, arbitrary attention, mixed widths: every output within 1e-5 of HAT's."""
    differences = max_differences(reference, name)
    assert max(differences.values()) < ATOL, differences


@pytest.mark.shared_data
def test_fixture_checkpoint_reads_safely(reference: Path) -> None:
    hat = _fixture_model(str(reference / "checkpoint_supertransformer.pt"))
    assert "last_optimizer_state" in read_hat_file(reference / "checkpoint_supertransformer.pt")  # read, dropped
    assert hat.subtransformer is None and hat.model.num_parameters() == 34_432 and not hat.model.training
    assert _same_space(hat.space, DesignSpace.from_yaml(reference / "space.yml"))
    assert (hat.source_lang, hat.target_lang) == ("en", "de")


@pytest.mark.shared_data
def test_hat_subtransformer_checkpoint(reference: Path, tmp_path) -> None:
    """HAT's SubTransformer checkpoints carry the configuration in ``*_subtransformer`` args (no real one here, so
    the fixture's args get mix_a's values as HAT's parser would set them)."""
    state = read_hat_file(reference / "checkpoint_supertransformer.pt")
    config = SubTransformerConfig.from_yaml(reference / "subtransformer" / "mix_a.yml")
    fields = {key.replace("-", "_"): value for key, value in config.to_dict().items()}
    fields["decoder_arbitrary_ende_attn_all_subtransformer"] += [-1, -1, -1]  # HAT's sampled configs: one per layer
    args = argparse.Namespace(**{**vars(state["args"]), **fields, "train_subtransformer": True})
    hat = load_hat_checkpoint(_save_hat(tmp_path / "sub.pt", args, state["model"]))
    assert hat.subtransformer == config


@pytest.mark.shared_data
def test_convert_translate_and_export(reference: Path, tmp_path, capsys) -> None:
    """``dynhat convert`` -> every command's loader -> ``dynhat export-hat`` gives HAT's file back."""
    fixture = reference / "checkpoint_supertransformer.pt"
    converted = tmp_path / "tiny.pt"
    assert main(["convert", str(fixture), "--dict", str(reference / "dict.de.txt"), "--out", str(converted)]) == 0
    assert "HatVocabulary(size=64, no BPE, en->de)" in capsys.readouterr().out
    model, vocab = load_trained(converted)
    hat = _fixture_model(str(fixture))
    assert all(torch.equal(v, hat.model.state_dict()[k]) for k, v in model.state_dict().items())
    ref = _recorded(str(reference / "reference.npz"))
    assert vocab.encode("the old man sees the small red house") == ref["src_tokens"][0, :-1].tolist()
    assert vocab.decode(ref["target"][1]) == "die katze liest das buch"
    assert DesignSpace.from_yaml(tmp_path / "tiny.space.yml") == model.space

    (tmp_path / "in.en").write_text("the old man sees the small red house\na cat reads the book\n\n")
    assert main(["translate", str(converted), "--input", str(tmp_path / "in.en"), "--beam", "2",
                 "--config", str(reference / "subtransformer" / "mix_a.yml")]) == 0
    lines = capsys.readouterr().out.split("\n")
    assert len(lines) == 4 and lines[-1] == "" and lines[2] == ""  # one line per input line, empty for empty

    assert main(["export-hat", str(converted), "--out-dir", str(tmp_path / "hat")]) == 0
    original, exported = read_hat_file(fixture), read_hat_file(tmp_path / "hat" / "checkpoint.pt")
    assert list(exported["model"]) == list(original["model"])
    assert all(torch.equal(exported["model"][k], v) for k, v in original["model"].items() if "_float_tensor" not in k)
    theirs = vars(original["args"])
    assert {k: v for k, v in vars(exported["args"]).items() if k in theirs and v != theirs[k]}.keys() == {"data"}
    assert (tmp_path / "hat" / "dict.de.txt").read_text() == (reference / "dict.de.txt").read_text()
    assert main(["convert", str(tmp_path / "hat" / "checkpoint.pt"), "--dict", str(tmp_path / "hat" / "dict.en.txt"),
                 "--out", str(tmp_path / "again.pt")]) == 0
    again, first = load_checkpoint(tmp_path / "again.pt"), load_checkpoint(converted)
    assert all(torch.equal(again["model"][k], v) for k, v in first["model"].items())
    assert again["vocab"] == first["vocab"] and again["space"] | {"name": ""} == first["space"] | {"name": ""}

    (tmp_path / "short.txt").write_text("the 1\n")
    assert main(["convert", str(fixture), "--dict", str(tmp_path / "short.txt"), "--out", str(tmp_path / "x.pt")]) == 2
    assert "short.txt: 5 symbols (4 special + 1 lines) but the embedding" in capsys.readouterr().err
