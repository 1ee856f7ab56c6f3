from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from dynhat.cli import main
from dynhat.errors import ConfigError, DataError
from dynhat.latency.ensemble import EnsemblePredictor
from dynhat.latency.features import (
    HAT_DERIVED,
    HAT_FEATURES,
    hat_derived_features,
    hat_features,
    layer_feature_names,
    layer_features,
)
from dynhat.latency.hat_predictor import HatPredictor, round_lat_norm
from dynhat.latency.predictor import LatencyPredictor, device_from_name, load_predictor, metrics
from dynhat.latency.table import LatencyTable, write_hat_csv
from dynhat.space import SubTransformerConfig, load_space, sample
from dynhat.space.cost import count_macs, layer_macs

# HAT_wmt14ende_xeon@278.7ms_bleu@27.9.yml
XEON_278 = SubTransformerConfig(
    encoder_embed_dim=512, encoder_layer_num=6, encoder_ffn_embed_dim=(3072,) * 6,
    encoder_self_attention_heads=(4, 4, 8, 8, 8, 4), decoder_embed_dim=512, decoder_layer_num=3,
    decoder_ffn_embed_dim=(3072,) * 3, decoder_self_attention_heads=(8, 8, 8), decoder_ende_attention_heads=(4, 8, 8),
    decoder_arbitrary_ende_attn=(-1, 1, 1))  # fmt: skip
XEON_278_FEATURES = [512, 6, 3072, 36 / 6, 512, 3, 3072, 8, 20 / 3, (1 + 2 + 2) / 3]


def _law(x: np.ndarray) -> np.ndarray:
    """A known latency law, linear in HAT's per-stack sums: 20 ms + per decoder layer 25 ms, FFN and attention."""
    d_dec, layers, ffn, attended = x[:, 4], x[:, 5], x[:, 6], x[:, 9]
    return 20 + layers * (25 + 0.004 * ffn * d_dec / 512 + 3 * attended) + 0.002 * x[:, 2]


def _synthetic(n: int = 400, seed: int = 0, noise: float = 0.01) -> LatencyTable:
    """HAT features of configurations sampled from HAT's space, latency from ``_law`` with relative noise."""
    space, rng = load_space("hat-wmt14-en-de"), random.Random(seed)
    feats = np.array([hat_features(sample(space, rng)) for _ in range(n)])
    total = _law(feats) * (1 + noise * np.random.default_rng(seed).standard_normal(n))
    enc = np.full(n, 5.0)
    return LatencyTable(feats, enc, total - enc, np.zeros(n), np.zeros(n), "synthetic.csv")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small fits run fastest (and steadiest on a shared machine) on one thread."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def table() -> LatencyTable:
    return _synthetic()


@pytest.fixture(scope="module")
def ours(table: LatencyTable) -> EnsemblePredictor:
    return EnsemblePredictor(members=3, steps=200, seed=1, metadata={"device": "synthetic", "threads": 1,
                                                                     "space": "hat-wmt14-en-de"}).fit(table, 0)


# ------------------------------------------------------------------------------------------------ features
def test_hat_features_of_a_published_config_by_hand() -> None:
    assert hat_features(XEON_278) == pytest.approx(XEON_278_FEATURES, abs=1e-12)


@pytest.mark.shared_data
def test_hat_features_of_the_real_yaml(hat_configs) -> None:
    config = SubTransformerConfig.from_yaml(hat_configs / "subtransformer" / "HAT_wmt14ende_xeon@278.7ms_bleu@27.9.yml")
    assert config == XEON_278
    assert hat_features(config) == pytest.approx(XEON_278_FEATURES, abs=1e-12)


def test_derived_features_are_per_stack_sums() -> None:
    x = hat_derived_features(np.array(XEON_278_FEATURES))
    assert x.shape == (1, 10 + len(HAT_DERIVED))
    named = dict(zip(HAT_FEATURES + HAT_DERIVED, x[0], strict=True))
    assert named["decoder_sum_ffn"] == 3 * 3072 and named["decoder_sum_attended"] == pytest.approx(5)
    assert named["decoder_sum_ende_heads"] == pytest.approx(20)


def test_layer_features_pad_inactive_layers_and_count_macs() -> None:
    space = load_space("hat-wmt14-en-de")
    names, x = layer_feature_names(space), layer_features(XEON_278, space)
    assert len(names) == len(x) == 5 + 6 * 4 + 6 * 6
    row = dict(zip(names, x, strict=True))
    assert row["decoder2_active"] == 1 and row["decoder2_attended"] == 2 and row["decoder0_attended"] == 1
    assert all(row[f"decoder{i}_{k}"] == 0 for i in (3, 4, 5) for k in ("active", "ffn", "mmacs"))
    assert row["encoder1_heads"] == 4 and row["encoder2_heads"] == 8
    enc, dec = layer_macs(XEON_278, space)
    vocab = 32768
    assert sum(enc) + sum(dec) + 30 * 512 * vocab == count_macs(XEON_278, space, vocab)
    assert row["output_mmacs"] == pytest.approx(30 * 512 * vocab / 1e6)
    too_deep = load_space("multi30k-cpu")
    if XEON_278.decoder_layer_num > too_deep.decoder_layers or XEON_278.encoder_layer_num > too_deep.encoder_layers:
        with pytest.raises(ConfigError):
            layer_features(XEON_278, too_deep)


# ------------------------------------------------------------------------------------------------ helpers
def test_metrics_and_lat_norm() -> None:
    m = metrics(np.array([110.0, 90.0, 100.0, 100.0]), np.array([100.0, 100.0, 100.0, 100.0]))
    assert (m.rmse_ms, m.mape_pct, m.max_abs_ms, m.rows) == (pytest.approx(np.sqrt(50)), 5.0, 10.0, 4)
    assert [round_lat_norm(v) for v in (5795.0, 268.1, 166.1, 126.7)] == [6000, 300, 200, 100]
    assert device_from_name("x/wmt14ende_cpu_raspberrypi_all.csv") == "raspberrypi"
    assert device_from_name("wmt14ende_gpu_titanxp_all.csv") == "titanxp" and device_from_name("mine.csv") is None


def test_hat_network_is_hats() -> None:
    net = HatPredictor().net
    assert sum(p.numel() for p in net.parameters()) == 486_001
    assert set(net.state_dict()) == {"first_layer.weight", "first_layer.bias", "predict.weight", "predict.bias"} | {
        f"layers.{i}.{k}" for i in range(3) for k in ("weight", "bias")}


# ------------------------------------------------------------------------------------------------ fitting
def test_ours_learns_a_known_law(table: LatencyTable, ours: EnsemblePredictor) -> None:
    test = ours.evaluate(table, 0)
    assert test.mape_pct < 1.5 and test.rows == 40  # noise is 1 %
    assert ours.metadata["test"]["mape_pct"] == pytest.approx(test.mape_pct)
    assert ours.metadata["split"] == {"train": 320, "valid": 40, "test": 40}
    mean, std = ours.predict_with_std(table.features[:4])
    assert mean.shape == std.shape == (4,) and (std >= 0).all() and (std < 0.05 * mean).all()
    assert 0 < ours.noise_ms < 0.05 * table.total_ms.mean()


def test_the_ridge_is_chosen_on_the_validation_rows(table: LatencyTable, ours: EnsemblePredictor) -> None:
    assert ours.ridge is None and ours.ridge_used <= 1e-4  # a clean law keeps a small ridge
    # few rows of pure noise for many inputs: a tiny ridge extrapolates wildly, a larger one is chosen
    rng = np.random.default_rng(0)
    noisy = LatencyTable(rng.uniform(0, 1, (60, 10)), np.full(60, 1.0), rng.uniform(0.5, 10, 60), np.zeros(60),
                         np.zeros(60), "noise.csv")
    fitted = EnsemblePredictor(members=2, steps=0).fit(noisy, 0)
    assert fitted.ridge_used >= 1e-2
    # no chosen ridge predicts a non-positive latency for a configuration it was fitted on
    assert np.all(fitted.predict(noisy.features[noisy.split(0).train]) > 0)
    assert EnsemblePredictor(members=2, steps=0, ridge=1e-6).fit(noisy, 0).ridge_used == 1e-6


def test_hat_predictor_learns_a_known_law_with_a_higher_rate(table: LatencyTable) -> None:
    hat = HatPredictor(device="xeon", steps=200, lr=2e-3, seed=0).fit(table, 0)
    assert hat.lat_norm == 300  # HAT's constant for the device
    assert hat.evaluate(table, 0).mape_pct < 5
    assert HatPredictor(steps=1).fit(table, 0).lat_norm == round_lat_norm(table.total_ms[table.split(0).train].mean())
    assert HatPredictor(steps=1, lat_norm=123.0).fit(table, 0).lat_norm == 123.0


def test_fits_are_seeded(table: LatencyTable) -> None:
    a = EnsemblePredictor(members=2, steps=40, seed=5).fit(table, 1)
    b = EnsemblePredictor(members=2, steps=40, seed=5).fit(table, 1)
    np.testing.assert_array_equal(a.predict(table.features[:10]), b.predict(table.features[:10]))
    h1, h2 = (HatPredictor(steps=20, seed=2).fit(table, 1) for _ in range(2))
    np.testing.assert_array_equal(h1.predict(table.features[:10]), h2.predict(table.features[:10]))


def test_save_load_round_trip(tmp_path, table: LatencyTable, ours: EnsemblePredictor) -> None:
    hat = HatPredictor(steps=30, metadata={"device": "synthetic"}).fit(table, 0)
    for predictor in (ours, hat):
        path = tmp_path / f"{predictor.method}.pt"
        predictor.save(path)
        payload = torch.load(path, weights_only=True)  # a plain dict of tensors and JSON-able values
        assert payload["method"] == predictor.method and payload["metadata"]["source"] == "synthetic.csv"
        loaded = load_predictor(path)
        assert type(loaded) is type(predictor) and loaded.metadata == predictor.metadata
        np.testing.assert_array_equal(loaded.predict(table.features), predictor.predict(table.features))
        assert loaded.predict_config(XEON_278) == predictor.predict_config(XEON_278)
    again = LatencyPredictor.load(tmp_path / "ours.pt")
    assert isinstance(again, EnsemblePredictor)
    np.testing.assert_array_equal(again.predict_with_std(table.features)[1], ours.predict_with_std(table.features)[1])
    assert again.metadata["threads"] == 1 and again.metadata["space"] == "hat-wmt14-en-de"
    with pytest.raises(DataError, match="holds a HatPredictor"):
        EnsemblePredictor.load(tmp_path / "hat.pt")
    (tmp_path / "junk.pt").write_text("not a predictor")
    with pytest.raises(DataError, match=r"junk\.pt: not a dynhat latency predictor"):
        load_predictor(tmp_path / "junk.pt")
    with pytest.raises(DataError, match="file not found"):
        load_predictor(tmp_path / "missing.pt")


def test_config_outside_the_fitted_data_is_a_clear_error(ours: EnsemblePredictor) -> None:
    ours.predict_config(XEON_278)  # inside
    wide = SubTransformerConfig(**{**XEON_278.__dict__, "decoder_embed_dim": 768})
    with pytest.raises(ConfigError, match=r"wide\.yml: .*decoder_embed_dim = 768 was never seen when fitting "
                                          r"\(seen: 512, 640\)"):
        ours.predict_config(wide, source="wide.yml")
    huge_ffn = SubTransformerConfig(**{**XEON_278.__dict__, "decoder_ffn_embed_dim": (8192,) * 3})
    with pytest.raises(ConfigError, match=r"decoder_ffn_embed_dim_avg = 8192 is outside the fitted range"):
        ours.predict_config(huge_ffn)


def test_per_layer_features(tmp_path) -> None:
    """Full configurations known: per-layer features, a latency law in their MAC counts, save/load, space checks."""
    space, rng = load_space("hat-wmt14-en-de"), random.Random(3)
    configs = [sample(space, rng) for _ in range(300)]
    feats = np.array([layer_features(c, space) for c in configs])
    names = layer_feature_names(space)
    mmacs = feats[:, [i for i, n in enumerate(names) if n.endswith("mmacs")]].sum(1)
    total = 10 + 0.05 * mmacs
    table = LatencyTable(feats, np.full(300, 1.0), total - 1, np.zeros(300), np.zeros(300), "layers.csv", names)
    predictor = EnsemblePredictor(members=2, steps=100, metadata={"space": "hat-wmt14-en-de"}).fit(table, 0)
    assert predictor.evaluate(table, 0).mape_pct < 1
    predictor.save(tmp_path / "layers.pt")
    loaded = load_predictor(tmp_path / "layers.pt")
    expected = 10 + 0.05 * (sum(sum(m) for m in layer_macs(XEON_278, space)) / 1e6 + 30 * 512 * 32768 / 1e6)
    assert loaded.predict_config(XEON_278) == pytest.approx(expected, rel=0.02)
    odd = SubTransformerConfig(**{**XEON_278.__dict__, "decoder_ffn_embed_dim": (3072, 1536, 3072)})
    with pytest.raises(ConfigError, match=r"decoder1_ffn = 1536 was never seen"):
        loaded.predict_config(odd)
    with pytest.raises(DataError, match="HAT's 10 features"):
        HatPredictor(steps=1).fit(table, 0)


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_fit_and_predict(tmp_path, capsys) -> None:
    write_hat_csv(tmp_path / "lat_cpu_xeon.csv", _synthetic(200, seed=4))
    XEON_278.save_yaml(tmp_path / "good.yml")
    pred = tmp_path / "ours.pt"
    assert main(["latency", "fit", str(tmp_path / "lat_cpu_xeon.csv"), "--out", str(pred), "--seed", "2"]) == 0
    out = capsys.readouterr().out
    assert "device xeon" in out and "test: RMSE" in out and "MAPE" in out and "max abs error" in out
    assert main(["latency", "predict", str(pred), str(tmp_path / "good.yml")]) == 0
    out = capsys.readouterr().out
    assert " ms  (device xeon; ensemble std " in out
    value = float(out.split()[0])
    assert value == pytest.approx(_law(np.array([XEON_278_FEATURES]))[0], rel=0.05)

    bad = SubTransformerConfig(**{**XEON_278.__dict__, "encoder_embed_dim": 768})
    bad.save_yaml(tmp_path / "bad.yml")
    assert main(["latency", "predict", str(pred), str(tmp_path / "bad.yml")]) == 2
    err = capsys.readouterr().err
    assert "bad.yml" in err and "encoder_embed_dim = 768 was never seen" in err

    hat = tmp_path / "hat.pt"
    assert main(["latency", "fit", str(tmp_path / "lat_cpu_xeon.csv"), "--out", str(hat), "--method", "hat",
                 "--device", "titanxp", "--steps", "20"]) == 0
    assert "device titanxp" in capsys.readouterr().out
    assert load_predictor(hat).lat_norm == 200  # type: ignore[attr-defined]
    assert main(["latency", "predict", str(hat), str(tmp_path / "good.yml")]) == 0
    assert "no uncertainty" in capsys.readouterr().out

    robust = tmp_path / "robust.pt"
    assert main(["latency", "fit", str(tmp_path / "lat_cpu_xeon.csv"), "--out", str(robust), "--huber", "3",
                 "--steps", "50", "--threads", "1", "--space", "hat-wmt14-en-de"]) == 0
    loaded = load_predictor(robust)
    assert loaded.huber_delta == 3 and loaded.metadata["threads"] == 1  # type: ignore[attr-defined]
    assert main(["latency", "fit", str(tmp_path / "lat_cpu_xeon.csv"), "--out", str(robust), "--method", "hat",
                 "--huber", "3"]) == 2
    assert "--huber applies to --method ours only" in capsys.readouterr().err
