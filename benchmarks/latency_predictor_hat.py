"""Latency predictors on HAT's published latency datasets: HAT's MLP vs dynhat's ensemble, the measurement drift,
and the predictions for HAT's published SubTransformers.

For each of HAT's four latency CSVs (2,000 SubTransformers each) and split seeds 0..4: HAT's predictor
(reimplemented, HAT's per-device lat-norm), dynhat's ensemble (``ours``), its Huber variant and ordinary least
squares on HAT's 10 features, all on identical 80/10/10 splits; test RMSE / MAPE / max error.

Drift: the rows are in measurement order. Least squares on the features, with and without a one-hot of the row's
block of 100 rows (row_index // 100), shows how much of the residual error is drift of the measuring machine over
time. Analysis only: no predictor ever sees the position.

Published table: HAT's WMT'14 En-De SubTransformers for the Xeon and the Raspberry Pi carry their measured
latency in the file name; both predictors (fitted on the seed-0 train split of the matching CSV) predict them.

    python benchmarks/latency_predictor_hat.py       # one thread; writes results/latency_predictor_hat.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).parent))
from results_file import RESULTS, write_result

from dynhat.inference.measure import machine_info, pinned
from dynhat.latency.ensemble import EnsemblePredictor
from dynhat.latency.features import hat_derived_features
from dynhat.latency.hat_predictor import HatPredictor
from dynhat.latency.predictor import HAT_LAT_NORM, LatencyPredictor, Metrics, device_from_name, metrics
from dynhat.latency.table import LatencyTable, read_hat_csv
from dynhat.space import SubTransformerConfig

REPO = Path(__file__).resolve().parents[1]
SECTION = "## Predictors on HAT's published latency data"
FILES = ("wmt14ende_cpu_raspberrypi_all.csv", "wmt14ende_cpu_xeon_all.csv", "wmt14ende_gpu_titanxp_all.csv",
         "iwslt14deen_gpu_titanxp_all.csv")
BLOCK = 100
PUBLISHED = re.compile(r"HAT_wmt14ende_(?P<device>[a-z]+)@(?P<lat>[\d.]+)(?P<unit>ms|s)_bleu@(?P<bleu>[\d.]+)\.yml$")


class LeastSquares(LatencyPredictor):
    """Context row only (not saved): ordinary least squares on HAT's 10 features + intercept."""

    method = ""

    def _fit(self, table: LatencyTable, split) -> None:  # type: ignore[no-untyped-def]
        a = np.column_stack([table.features[split.train], np.ones(len(split.train))])
        self.beta = np.linalg.lstsq(a, table.total_ms[split.train], rcond=None)[0]

    def predict(self, features: np.ndarray) -> np.ndarray:
        x = self._as_rows(features)
        return np.column_stack([x, np.ones(len(x))]) @ self.beta


def methods(device: str, hat_steps: int) -> dict[str, Callable[[int], LatencyPredictor]]:
    return {
        "HAT (reimplemented)": lambda s: HatPredictor(device=device, seed=s, steps=hat_steps),
        "ours": lambda s: EnsemblePredictor(seed=s, device=device),
        "ours, Huber δ=3": lambda s: EnsemblePredictor(seed=s, device=device, huber_delta=3.0),
        "least squares, 10 features": lambda s: LeastSquares(seed=s),
    }


def mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.2f} ± {np.std(values):.2f}"


# ------------------------------------------------------------------------------------------------ drift
def lstsq_residual(a: np.ndarray, y: np.ndarray, fit_rows: np.ndarray, eval_rows: np.ndarray) -> np.ndarray:
    beta = np.linalg.lstsq(a[fit_rows], y[fit_rows], rcond=None)[0]
    return y[eval_rows] - a[eval_rows] @ beta


def drift(table: LatencyTable, seeds: int) -> dict[str, float]:
    n, y = len(table), table.total_ms
    blocks = np.arange(n) // BLOCK
    onehot = np.eye(blocks.max() + 1)[blocks]
    out: dict[str, float] = {}
    for tag, feats in (("10", table.features), ("18", hat_derived_features(table.features))):
        plain = np.column_stack([feats, np.ones(n)])
        with_block = np.column_stack([feats, onehot])  # the one-hot spans the intercept
        everything = np.arange(n)
        r0 = lstsq_residual(plain, y, everything, everything)
        r1 = lstsq_residual(with_block, y, everything, everything)
        out[f"rmse{tag}"] = float(np.sqrt(np.mean(r0**2)))
        out[f"rmse{tag}_block"] = float(np.sqrt(np.mean(r1**2)))
        if tag == "10":
            block_means = [float(r0[blocks == b].mean()) for b in range(blocks.max() + 1)]
            out["block_mean_min"], out["block_mean_max"] = min(block_means), max(block_means)
            held, held_block = [], []
            for seed in range(seeds):
                split = table.split(seed)
                train = np.concatenate([split.train, split.valid])
                held.append(np.sqrt(np.mean(lstsq_residual(plain, y, train, split.test) ** 2)))
                held_block.append(np.sqrt(np.mean(lstsq_residual(with_block, y, train, split.test) ** 2)))
            out["test_rmse"], out["test_rmse_block"] = float(np.mean(held)), float(np.mean(held_block))
    return out


# ------------------------------------------------------------------------------------------------ main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path,
                        default=Path(os.environ.get("DYNHAT_DATA", REPO.parent / "shared" / "data")),
                        help="shared data folder (default $DYNHAT_DATA or ../shared/data)")
    parser.add_argument("--seeds", type=int, default=5, help="split seeds 0..N-1 (default 5)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--hat-steps", type=int, default=5000, help="HAT predictor steps (HAT: 5000)")
    parser.add_argument("--out", type=Path, default=RESULTS / "latency_predictor_hat.md",
                        help="markdown file to write (default results/latency_predictor_hat.md)")
    args = parser.parse_args()
    with pinned(None, args.threads):
        _run(args)


def _run(args: argparse.Namespace) -> None:
    """The benchmark, with ``--threads`` intra-op threads."""
    command = " ".join(["python", "benchmarks/latency_predictor_hat.py", *sys.argv[1:]])
    latency_dir = args.data / "hat" / "latency"
    tables = {name: read_hat_csv(latency_dir / name) for name in FILES}

    rpi = tables[FILES[0]]
    outliers = np.flatnonzero(rpi.encoder_ms > 1000)
    settled = int(outliers.max()) + 1 if len(outliers) else 0  # first row after the Pi's warm-up
    after_warmup: dict[str, list[Metrics]] = {}
    results: dict[str, dict[str, list[tuple[Metrics, float]]]] = {}
    uncertainty: dict[str, list[tuple[float, float, float]]] = {}
    seed0: dict[tuple[str, str], LatencyPredictor] = {}
    jobs = [(name, seed) for name in FILES for seed in range(args.seeds)]
    for name, seed in tqdm(jobs, desc="fits (file x seed)", unit="split"):
        table = tables[name]
        device = device_from_name(name) or "unknown"
        space = "hat-iwslt14-de-en (latency-dataset space)" if name.startswith("iwslt") else \
            "hat-wmt14-en-de (latency-dataset space)"
        for label, make in methods(device, args.hat_steps).items():
            predictor = make(seed)
            predictor.metadata.update(space=space, threads=None)
            start = time.perf_counter()
            predictor.fit(table, seed)
            elapsed = time.perf_counter() - start
            results.setdefault(name, {}).setdefault(label, []).append((predictor.evaluate(table, seed), elapsed))
            if seed == 0:
                seed0[(name, label)] = predictor
            if name == FILES[0]:
                test = table.split(seed).test
                test = test[test >= settled]
                after_warmup.setdefault(label, []).append(
                    metrics(predictor.predict(table.features[test]), table.total_ms[test]))
            if label == "ours":
                assert isinstance(predictor, EnsemblePredictor)
                test = table.split(seed).test
                mean, std = predictor.predict_with_std(table.features[test])
                margin = np.sqrt(std**2 + predictor.noise_ms**2)
                covered = float(np.mean(table.total_ms[test] <= mean + 2 * margin))
                uncertainty.setdefault(name, []).append((float(std.mean()), predictor.noise_ms, covered))
        tqdm.write(f"{name} seed {seed}: " + "; ".join(
            f"{label} {runs[-1][0].rmse_ms:.2f}/{runs[-1][0].mape_pct:.2f}%" for label, runs in results[name].items()))

    info = machine_info()
    today = datetime.date.today().isoformat()
    lines = [SECTION, "",
             f"Command: `{command}` ({today}, {info['cpu']}, {info['logical_cores']} logical cores, "
             f"torch {info['torch']}, {args.threads} thread(s)).", "",
             f"Data: HAT's published latency tables (`shared/data/hat/latency/`, 2,000 rows each; target = encoder "
             f"+ decoder mean latency). Split seeds 0..{args.seeds - 1}, each an 80/10/10 train/valid/test "
             "permutation shared by every predictor; metrics on the 200 test rows, mean ± std over the seeds; "
             "max error = the largest over all seeds' test rows; fit time on one thread (mean).", "",
             f"- HAT (reimplemented): HAT's MLP, features / [640, 6, 2048, 6, 640, 6, 2048, 6, 6, 2], lat-norm "
             f"{HAT_LAT_NORM}, Adam 1e-5, {args.hat_steps} steps of 128, last weights.",
             "- ours: `EnsemblePredictor` defaults: 5 bootstrap members, each weighted least squares (weights "
             "1/latency) on HAT's features + per-stack sums/products, plus a 2x32 MLP residual with early stopping "
             "on the validation rows.",
             "- ours, Huber δ=3: the same with Huber loss (IRLS for the linear part).",
             "- least squares, 10 features: context only.", "",
             "| file | predictor | RMSE (ms) | MAPE (%) | max error (ms) | fit (s) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name in FILES:
        for label, runs in results[name].items():
            rmse = [m.rmse_ms for m, _ in runs]
            mape = [m.mape_pct for m, _ in runs]
            lines.append(f"| {name.removesuffix('_all.csv')} | {label} | {mean_std(rmse)} | {mean_std(mape)} | "
                         f"{max(m.max_abs_ms for m, _ in runs):.1f} | {np.mean([t for _, t in runs]):.1f} |")
    lines += ["", "Ours against HAT's predictor, mean over seeds (negative = ours better):", "",
              "| file | ΔRMSE | ΔMAPE | seeds where ours has the lower RMSE / MAPE |", "| --- | --- | --- | --- |"]
    for name in FILES:
        hat, ours = results[name]["HAT (reimplemented)"], results[name]["ours"]
        d_rmse = np.mean([o.rmse_ms for o, _ in ours]) / np.mean([h.rmse_ms for h, _ in hat]) - 1
        d_mape = np.mean([o.mape_pct for o, _ in ours]) / np.mean([h.mape_pct for h, _ in hat]) - 1
        wins_r = sum(o.rmse_ms < h.rmse_ms for (o, _), (h, _) in zip(ours, hat, strict=True))
        wins_m = sum(o.mape_pct < h.mape_pct for (o, _), (h, _) in zip(ours, hat, strict=True))
        lines.append(f"| {name.removesuffix('_all.csv')} | {d_rmse * 100:+.1f} % | {d_mape * 100:+.1f} % | "
                     f"{wins_r}/{len(ours)} / {wins_m}/{len(ours)} |")
    lines += ["", "Uncertainty of ours (mean over seeds): the ensemble's spread (model uncertainty) is small next to "
              "the validation RMSE (noise the features cannot explain); the margin `mean + 2·sqrt(std² + "
              "valid RMSE²)` covers the share of test rows in the last column.", "",
              "| file | mean ensemble std (ms) | validation RMSE (ms) | test rows ≤ mean + 2·margin |",
              "| --- | --- | --- | --- |"]
    for name in FILES:
        u = np.asarray(uncertainty[name])
        lines.append(f"| {name.removesuffix('_all.csv')} | {u[:, 0].mean():.2f} | {u[:, 1].mean():.2f} | "
                     f"{u[:, 2].mean() * 100:.1f} % |")

    # ---------------------------------------------------------------------------------------- drift
    lines += ["", "### Drift over the measurement order", "",
              f"Least squares on the features, without and with a one-hot of the row's block (row_index // {BLOCK}, "
              "20 blocks; the rows are in measurement order). 'removed' = share of the residual mean square "
              "explained by the block alone (RMSE reduction in brackets). In-sample on all 2,000 rows, with HAT's "
              "10 features and with the 18 derived ones; 'held out' = mean test RMSE over the seeds' splits "
              "(fitted on train + valid). Analysis only: no predictor uses the position.", "",
              "| file | residual RMSE, 10 features (ms) | + block one-hot | removed | 18 features | + block | removed "
              "| held out: without / with block | block mean residual min / max (ms) |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name in FILES:
        d = drift(tables[name], args.seeds)

        def removed(a: float, b: float) -> str:
            return f"{(1 - b**2 / a**2) * 100:.0f} % ({(1 - b / a) * 100:.0f} %)"

        lines.append(f"| {name.removesuffix('_all.csv')} | {d['rmse10']:.2f} | {d['rmse10_block']:.2f} | "
                     f"{removed(d['rmse10'], d['rmse10_block'])} | {d['rmse18']:.2f} | {d['rmse18_block']:.2f} | "
                     f"{removed(d['rmse18'], d['rmse18_block'])} | {d['test_rmse']:.2f} / {d['test_rmse_block']:.2f} "
                     f"| {d['block_mean_min']:.1f} / {d['block_mean_max']:.1f} |")
    lines += ["", f"Raspberry Pi: {len(outliers)} rows have an encoder latency above 1 s (median of the file "
              f"{np.median(rpi.encoder_ms):.0f} ms); all of them are rows {outliers.min()}..{outliers.max()}, i.e. "
              "at the start of the measurement run, not a property of the configurations. They dominate that "
              "file's test RMSE for every predictor. The same predictors on the test rows measured after them "
              f"(row ≥ {settled}; mean over the seeds):", "",
              "| predictor | RMSE (ms) | MAPE (%) | max error (ms) |", "| --- | --- | --- | --- |"]
    for label, runs in after_warmup.items():
        lines.append(f"| {label} | {mean_std([m.rmse_ms for m in runs])} | {mean_std([m.mape_pct for m in runs])} "
                     f"| {max(m.max_abs_ms for m in runs):.1f} |")

    # ---------------------------------------------------------------------------------------- published table
    config_dir = args.data / "hat" / "configs" / "wmt14.en-de" / "subtransformer"
    lines += ["", "### HAT's published SubTransformers", "",
              "Latency in the file name (HAT's measurement on the device) against the predictions of the seed-0 "
              "predictors above (fitted on the seed-0 train split, 1,600 rows, of the matching CSV). Error = "
              "predicted / published - 1. Ours: mean ± ensemble std.", "",
              "| SubTransformer | published (ms) | HAT predictor (ms) | error | ours (ms) | error "
              "| ours, Huber (ms) | error |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for device, csv_name in (("xeon", FILES[1]), ("raspberrypi", FILES[0])):
        errors: dict[str, list[float]] = {"hat": [], "ours": [], "huber": []}
        rows = []
        for path in config_dir.glob(f"HAT_wmt14ende_{device}@*.yml"):
            match = PUBLISHED.search(path.name)
            if not match:
                continue
            published = float(match["lat"]) * (1000 if match["unit"] == "s" else 1)
            config = SubTransformerConfig.from_yaml(path)
            hat = seed0[(csv_name, "HAT (reimplemented)")].predict_config(config, source=str(path))
            ours = seed0[(csv_name, "ours")]
            assert isinstance(ours, EnsemblePredictor)
            mean, std = ours.predict_config_with_std(config, source=str(path))
            x = ours.features_of(config)
            beyond = [n for j, n in enumerate(ours.feature_names)
                      if not ours.feature_min[j] <= x[j] <= ours.feature_max[j]]
            mark = f" (beyond training range: {', '.join(beyond)})" if beyond else ""
            errors["hat"].append(hat / published - 1)
            errors["ours"].append(mean / published - 1)
            huber = seed0[(csv_name, "ours, Huber δ=3")].predict_config(config, source=str(path))
            errors["huber"].append(huber / published - 1)
            rows.append((published, f"| `{path.stem}`{mark} | {published:.0f} | {hat:.0f} | "
                                    f"{errors['hat'][-1] * 100:+.1f} % | {mean:.0f} ± {std:.0f} | "
                                    f"{errors['ours'][-1] * 100:+.1f} % | {huber:.0f} | "
                                    f"{errors['huber'][-1] * 100:+.1f} % |"))
        lines += [row for _, row in sorted(rows)]
        mae = {k: f"{np.mean(np.abs(v)) * 100:.1f} %" for k, v in errors.items()}
        lines.append(f"| **{device}: mean abs error** | | | {mae['hat']} | | {mae['ours']} | | {mae['huber']} |")
    section = "\n".join(lines) + "\n"
    print(section)
    write_result(args.out, section)


if __name__ == "__main__":
    main()
