from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers.toy_train import TOY_SPACE, make_trainer

from dynhat.errors import ConfigError
from dynhat.inference.checkpoint import load_checkpoint
from dynhat.space import DesignSpace, ladder, largest, smallest
from dynhat.train.loss import distillation_loss, label_smoothed_nll
from dynhat.train.schedule import LRSchedule
from dynhat.train.settings import TrainSettings
from dynhat.train.trainer import PROBE_FIELDS, autocast_dtype, checkpoint_finished, update_configs

SCRIPT = Path(__file__).parent / "helpers" / "toy_train.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def test_label_smoothing_matches_definition() -> None:
    logits = torch.randn(2, 3, 7)
    target = torch.tensor([[4, 5, 1], [6, 1, 1]])
    loss, nll = label_smoothed_nll(logits, target, 0.1, ignore_index=1)
    lp = torch.log_softmax(logits, -1)
    keep = target.ne(1)
    expected_nll = -lp.gather(-1, target.unsqueeze(-1)).squeeze(-1)[keep].sum()
    expected = 0.9 * expected_nll + 0.1 / 7 * (-lp.sum(-1))[keep].sum()
    torch.testing.assert_close(nll, expected_nll)
    torch.testing.assert_close(loss, expected)


def test_schedules() -> None:
    cos = LRSchedule("cosine", 1e-3, 10, 110, 1e-7, 1e-7)
    assert cos(0) == pytest.approx(1e-7) and cos(10) == pytest.approx(1e-3)
    assert cos(60) == pytest.approx((1e-3 + 1e-7) / 2) and cos(110) == pytest.approx(1e-7)
    inv = LRSchedule("inverse_sqrt", 5e-4, 4, 100)
    assert inv(16) == pytest.approx(5e-4 / 2)
    with pytest.raises(ValueError, match="lr-scheduler"):
        LRSchedule("linear", 1e-3, 1, 2)


def test_settings_errors(tmp_path) -> None:
    path = tmp_path / "t.yml"
    path.write_text("max-updates: 10\nlearning-rate: 1\n")
    with pytest.raises(ConfigError, match=r"t\.yml: learning-rate: unknown key"):
        TrainSettings.from_yaml(path)
    with pytest.raises(ConfigError, match="fixed-config"):
        TrainSettings(sampling="fixed")
    assert TrainSettings.from_dict({"max-updates": 7, "sampling": "sandwich"}).max_updates == 7


def test_sampling_per_update_is_reproducible() -> None:
    space = DesignSpace.from_dict(TOY_SPACE)
    s = TrainSettings()
    assert [update_configs(s, space, u, None) for u in range(20)] == [update_configs(s, space, u, None)
                                                                       for u in range(20)]
    assert len({update_configs(s, space, u, None)[0] for u in range(20)}) > 10
    sandwich = update_configs(TrainSettings(sampling="sandwich"), space, 3, None)
    assert sandwich[0] == largest(space) and sandwich[1] == smallest(space)
    staged = TrainSettings(sampling="sandwich", largest_first_updates=5)
    assert update_configs(staged, space, 4, None) == [largest(space)]
    assert update_configs(staged, space, 5, None) == [*sandwich[:2], update_configs(s, space, 5, None)[0]]


def test_distillation_loss_is_kl_to_the_teacher() -> None:
    logits, target = torch.randn(2, 3, 7), torch.tensor([[4, 5, 1], [6, 1, 1]])
    teacher = torch.log_softmax(torch.randn(2, 3, 7), -1)
    keep = target.ne(1)
    expected = torch.nn.functional.kl_div(torch.log_softmax(logits, -1)[keep], teacher[keep], log_target=True,
                                          reduction="sum")
    torch.testing.assert_close(distillation_loss(torch.log_softmax(logits, -1), teacher, target, ignore_index=1),
                               expected)
    assert float(distillation_loss(teacher, teacher, target, ignore_index=1)) == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(ConfigError, match="distill"):
        TrainSettings(distill=0.5)


def test_training_lowers_loss_and_keeps_checkpoints(tmp_path) -> None:
    trainer = make_trainer(str(tmp_path), max_updates=40)
    trainer.train(progress=False)
    rows = (tmp_path / "log.csv").read_text().splitlines()
    assert rows[0].startswith("update,epoch,lr,train_loss")
    payload = load_checkpoint(tmp_path / "checkpoint_last.pt")
    assert payload["state"]["update"] == 40 and (tmp_path / "checkpoint_best.pt").exists()
    first, last = rows[1].split(","), rows[-1].split(",")
    assert float(last[8]) < float(first[8])  # valid loss of the largest SubTransformer fell


def test_killed_run_resumes_as_if_never_stopped(tmp_path) -> None:
    updates = 300
    straight = tmp_path / "straight"
    subprocess.run([sys.executable, str(SCRIPT), str(straight), str(updates), "1"], check=True, env=ENV)
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(SCRIPT), str(killed), str(updates), "1"], env=ENV)
    deadline = time.time() + 120
    while time.time() < deadline and not (killed / "checkpoint_last.pt").exists():
        time.sleep(0.01)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stopped_at = load_checkpoint(killed / "checkpoint_last.pt")["state"]["update"]
    assert 0 < stopped_at < updates, "the kill should land mid-run"
    (killed / ".checkpoint_last.pt.x1y2.tmp").write_bytes(b"half a checkpoint")  # as a kill mid-save leaves
    subprocess.run([sys.executable, str(SCRIPT), str(killed), str(updates), "1"], check=True, env=ENV)
    assert not list(killed.glob(".*.tmp")), "the resumed run removes what the killed one left half-written"
    for name in ("checkpoint_last.pt", "log.csv"):  # same modes as the run that never stopped
        assert (killed / name).stat().st_mode == (straight / name).stat().st_mode == 0o100666 & ~_umask(), name
    a, b = torch.load(straight / "final_rank0.pt"), torch.load(killed / "final_rank0.pt")
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert _same_log(a["log"], b["log"])


def test_a_run_forks_from_another_onto_a_reduced_space(tmp_path) -> None:
    first = make_trainer(str(tmp_path / "full"), max_updates=6)
    first.train(progress=False)
    start = str(tmp_path / "full" / "checkpoint_last.pt")
    reduced = {**TOY_SPACE, "decoder-layer-num-choice": [2], "decoder-ffn-embed-dim-choice": [32]}
    fork = make_trainer(str(tmp_path / "reduced"), max_updates=10, space=reduced, init_from=start)
    assert fork.resume() and fork.state.update == 6
    for key, value in first.model.state_dict().items():
        assert torch.equal(value, fork.model.state_dict()[key]), key
    fork.train(progress=False)
    payload = load_checkpoint(tmp_path / "reduced" / "checkpoint_last.pt")
    assert payload["state"]["update"] == 10 and list(payload["space"]["decoder-layer-num-choice"]) == [2]
    narrower = {**TOY_SPACE, "encoder-ffn-embed-dim": 16, "encoder-ffn-embed-dim-choice": [16]}
    with pytest.raises(ConfigError, match=r"full/checkpoint_last\.pt: the checkpoint's SuperTransformer has other"):
        make_trainer(str(tmp_path / "narrow"), max_updates=10, space=narrower, init_from=start).resume()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _same_log(a: str, b: str) -> bool:
    """Logs match except the timing columns."""
    def strip(text: str) -> list[list[str]]:
        return [[v for i, v in enumerate(r.split(",")) if i not in (5, 6, 10, 11)] for r in text.splitlines()]
    return strip(a) == strip(b)


def test_two_ddp_processes_match_one_process(tmp_path) -> None:
    """torchrun with 2 gloo ranks == 1 process with twice the update frequency (same total batch).

    Sandwich with in-place distillation: the largest first, a smaller one's backward last. Without dropout: one
    process draws both micro-batches' masks from one RNG stream, two ranks from two.
    """
    updates = 6
    subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "one"), str(updates), "2", "sandwich", "0", "0.5"],
                   check=True, env=ENV)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                    str(SCRIPT), str(tmp_path / "two"), str(updates), "1", "sandwich", "0", "0.5"], check=True, env=ENV,
                   timeout=300)
    one = torch.load(tmp_path / "one" / "final_rank0.pt")
    r0, r1 = (torch.load(tmp_path / "two" / f"final_rank{r}.pt") for r in (0, 1))
    for key, value in r0["model"].items():
        assert torch.equal(value, r1["model"][key]), f"ranks differ in {key}"
        # Adam turns rounding noise on near-zero gradients into steps of up to lr (2e-3): allow half of one
        torch.testing.assert_close(value, one["model"][key], atol=1e-3, rtol=1e-3)
    loss_one = [float(r.split(",")[3]) for r in one["log"].splitlines()[1:]]
    loss_two = [float(r.split(",")[3]) for r in r0["log"].splitlines()[1:]]
    assert loss_one == pytest.approx(loss_two, rel=1e-4)


def test_ladder_runs_from_smallest_to_largest() -> None:
    space = DesignSpace.from_dict(TOY_SPACE)
    assert ladder(space, 2) == [smallest(space), largest(space)]
    rungs = ladder(space, 4)
    assert rungs[0] == smallest(space) and rungs[-1] == largest(space) and len(set(rungs)) == 4
    widths = [(c.decoder_layer_num, c.encoder_embed_dim, c.encoder_ffn_embed_dim[0]) for c in rungs]
    assert widths == sorted(widths)
    with pytest.raises(ValueError, match="2 rungs"):
        ladder(space, 1)
    assert update_configs(TrainSettings(sampling="ladder", ladder_size=3), space, 7, None) == ladder(space, 3)[::-1]


def test_probes_are_logged_and_truncated_on_resume(tmp_path) -> None:
    trainer = make_trainer(str(tmp_path), max_updates=20, sampling="ladder", distill=0.5, probes=3)
    trainer.train(progress=False)
    rows = (tmp_path / "probes.csv").read_text().splitlines()
    assert rows[0] == ",".join(PROBE_FIELDS)
    space = DesignSpace.from_dict(TOY_SPACE)
    assert [r.split(",")[4] for r in rows[1:]] == [c.id for c in ladder(space, 3)] * 2  # updates 10 and 20
    assert [int(r.split(",")[0]) for r in rows[1:]] == [10] * 3 + [20] * 3
    cpu = [float(r.split(",")[2]) for r in rows[1:]]
    assert 0 < cpu[0] < cpu[-1]
    # a run resumed from update 18 drops the rows of update 20, which it will write again
    resumed = make_trainer(str(tmp_path), max_updates=20, sampling="ladder", distill=0.5, probes=3)
    resumed.state.update = 18
    resumed._truncate_log(resumed.probe_path, PROBE_FIELDS, 18)
    assert len((tmp_path / "probes.csv").read_text().splitlines()) == 4


def test_cpu_budget_stops_the_run(tmp_path) -> None:
    trainer = make_trainer(str(tmp_path), max_updates=10_000, max_cpu_minutes=0.002)
    state = trainer.train(progress=False)
    assert 0 < state.update < 10_000 and state.cpu_s >= 0.12
    assert load_checkpoint(tmp_path / "checkpoint_last.pt")["state"]["update"] == state.update


def test_bf16_autocast_trains(tmp_path) -> None:
    trainer = make_trainer(str(tmp_path), max_updates=20, precision="bf16", dropout=0.0)
    assert trainer.dtype == torch.bfloat16 and autocast_dtype("fp32", torch.device("cpu")) is None
    trainer.train(progress=False)
    rows = [r.split(",") for r in (tmp_path / "log.csv").read_text().splitlines()[1:]]
    valid = [float(r[8]) for r in rows if r[8]]
    assert all(torch.isfinite(torch.tensor(valid))) and valid[-1] < valid[0]
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # autocast keeps fp32 master weights


def test_a_resumed_run_keeps_the_autocast_it_started_with(tmp_path) -> None:
    # a run started (here, under bf16) and resumed under auto on a machine that would choose otherwise
    first = make_trainer(str(tmp_path), max_updates=4, precision="bf16")
    first.train(progress=False, piece_minutes=0.0)
    assert load_checkpoint(tmp_path / "checkpoint_last.pt")["state"]["precision"] == "bf16"
    resumed = make_trainer(str(tmp_path), max_updates=4, precision="auto")
    resumed.dtype = None  # what auto resolves to on a CPU without native bf16
    assert resumed.resume() and resumed.dtype == torch.bfloat16 and resumed.state.precision == "bf16"
    # an explicit precision changes it from here on, and the checkpoint records the change
    explicit = make_trainer(str(tmp_path), max_updates=4, precision="fp32")
    assert explicit.resume() and explicit.dtype is None
    explicit.train(progress=False)
    assert load_checkpoint(tmp_path / "checkpoint_last.pt")["state"]["precision"] == "fp32"


def test_device_and_precision_settings() -> None:
    with pytest.raises(ConfigError, match="device"):
        TrainSettings(device="tpu")
    with pytest.raises(ConfigError, match="precision"):
        TrainSettings(precision="fp8")
    assert TrainSettings(distill=0.5, sampling="ladder").distill == 0.5


def test_a_run_in_pieces_stops_saved_and_resumes(tmp_path) -> None:
    first = make_trainer(str(tmp_path), max_updates=12)
    assert first.train(progress=False, piece_minutes=0.0).update == 1  # the piece ends after its first update
    assert load_checkpoint(tmp_path / "checkpoint_last.pt")["state"]["update"] == 1
    second = make_trainer(str(tmp_path), max_updates=12)
    assert second.resume() and second.train(progress=False).update == 12


@pytest.mark.parametrize(("text", "message"), [
    ("max-tokens: abc\n", "max-tokens: expected int, got 'abc'"),
    ("max-lr: .nan\n", "max-lr: expected a finite number"),
    ("adam-betas: [0.9]\n", "adam-betas: expected a list of two finite numbers"),
    ("threads: true\n", "threads: expected int or null"),
    ("- max-updates\n", "expected a mapping of settings, got list"),
    ("max-updates: [1,\n", "not valid YAML"),
])
def test_settings_files_with_bad_values_name_file_and_field(tmp_path, text, message) -> None:
    path = tmp_path / "bad.yml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        TrainSettings.from_yaml(path)
    assert str(path) in str(err.value)


def test_unusable_yaml_files_are_named(tmp_path) -> None:
    binary = tmp_path / "binary.yml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    for load in (TrainSettings.from_yaml, DesignSpace.from_yaml):
        with pytest.raises(ConfigError, match=r"binary\.yml: not UTF-8 text"):
            load(binary)
        with pytest.raises(ConfigError, match="not a regular file"):
            load(tmp_path)
    assert TrainSettings.from_dict({"max-lr": 1, "adam-betas": [0.9, 0.99]}).adam_betas == (0.9, 0.99)


def test_the_heap_is_trimmed_where_the_c_library_can() -> None:
    import platform

    from dynhat.train.allocator import release_free_heap

    assert release_free_heap() is (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")


def test_patience_stops_a_run_whose_validation_loss_stopped_improving(tmp_path) -> None:
    trainer = make_trainer(str(tmp_path / "run"), 50, patience=2)  # a validation every 10 updates
    trainer.state.best_valid = 0.0  # no validation loss can beat it: every validation is stale
    state = trainer.train()
    assert state.update == 20 and state.stale_validations == 2
    resumed = make_trainer(str(tmp_path / "run"), 50, patience=3)
    assert resumed.resume() and resumed.state.stale_validations == 2
    assert resumed.train().update == 30  # the count resumes with the run: one more stale validation
    assert resumed.finished and checkpoint_finished(tmp_path / "run" / "checkpoint_last.pt")
    again = make_trainer(str(tmp_path / "run"), 50, patience=3)
    assert again.resume() and again.finished and again.train().update == 30  # a converged run trains no further
    more = make_trainer(str(tmp_path / "run"), 50, patience=4)
    assert more.resume() and not more.finished  # more patience: it would go on
    with pytest.raises(ConfigError, match="patience"):
        make_trainer(str(tmp_path / "other"), 40, patience=0)


def test_the_trainer_caps_onednn_primitive_cache_unless_the_environment_sets_it(tmp_path, monkeypatch) -> None:
    from dynhat.train.allocator import PRIMITIVE_CACHE

    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", raising=False)
    make_trainer(str(tmp_path / "a"), 1)
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == str(PRIMITIVE_CACHE)
    monkeypatch.setenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "512")
    make_trainer(str(tmp_path / "b"), 1)
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "512"
