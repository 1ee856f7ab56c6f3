"""Latency datasets of this machine, collected without drift, and predictors fitted on them.

Two collections per space, both drift-probed (reference configuration every 10 measurements):
A = ``--configs`` SubTransformers in sampling order; B = the first ``--repeat`` of them again, later, in another
(shuffled) order. Reports the drift seen by the probes, held-out error of HAT's predictor (10 features) and of ours
(per-layer features) on A over 5 split seeds, and how well B reproduces A on the shared configurations, raw and
after drift correction.

    python benchmarks/latency_own.py --space multi30k-cpu --configs 150 --repeat 50 --cpu 1
    python benchmarks/latency_own.py --space multi30k-cpu --paired --cpu 1   # each row with its own reference runs
    python benchmarks/latency_own.py --space hat-wmt14-en-de --configs 80 --repeat 50 --runs 10 --vocab 32768 --cpu 1
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from results_file import RESULTS, write_result

from dynhat.inference.measure import machine_info, pinned
from dynhat.latency.collect import CollectSettings, collect
from dynhat.latency.dataset import load_collection
from dynhat.latency.ensemble import EnsemblePredictor
from dynhat.latency.hat_predictor import HatPredictor

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = str(REPO / "runs" / "latency")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="multi30k-cpu")
    parser.add_argument("--configs", type=int, default=150)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5, help="untimed runs before each row's timed ones")
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--cpu", type=int, default=None, help="pin to this CPU")
    parser.add_argument("--paired", action="store_true",
                        help="every run right after one of the reference, each row corrected by its own")
    parser.add_argument("--out-dir", default=DEFAULT_OUT)
    parser.add_argument("--name", default=None,
                        help="results/NAME.md to write (default latency_own_SPACE, with _paired for --paired)")
    args = parser.parse_args()
    # one thread for the fits and evaluations too: two threads on one pinned core stall each other
    with pinned(None if args.cpu is None else [args.cpu], 1):
        _run(args)


def _run(args: argparse.Namespace) -> None:
    """The benchmark, on ``--cpu`` (when given) with one intra-op thread."""
    out = Path(args.out_dir)
    base = CollectSettings(space=args.space, configs=args.configs, runs=args.runs, warmup=args.warmup,
                           vocab_size=args.vocab, paired=args.paired)
    path_a, path_b = out / f"{args.space}-a.csv", out / f"{args.space}-b.csv"
    collect(base, path_a)
    collect(CollectSettings(**{**base.__dict__, "configs": args.repeat, "order_seed": 1}), path_b)
    a, b = load_collection(path_a), load_collection(path_b)

    fits = {"HAT (10 features)": [], "ours (per-layer)": [], "ours (HAT's 10 features)": []}
    for seed in range(args.seeds):
        layer, hat10 = a.table("layer"), a.table("hat")
        fits["HAT (10 features)"].append(HatPredictor(seed=seed).fit(hat10, seed).evaluate(hat10, seed))
        fits["ours (per-layer)"].append(EnsemblePredictor(seed=seed).fit(layer, seed).evaluate(layer, seed))
        fits["ours (HAT's 10 features)"].append(EnsemblePredictor(seed=seed).fit(hat10, seed).evaluate(hat10, seed))

    shared = sorted(set(a.corrected_ms()) & set(b.corrected_ms()))
    raw_a = {r.config.id: r.total_ms for r in a.samples}
    raw_b = {r.config.id: r.total_ms for r in b.samples}
    cor_a, cor_b = a.corrected_ms(), b.corrected_ms()
    raw_dev = [abs(raw_b[k] / raw_a[k] - 1) * 100 for k in shared]
    cor_dev = [abs(cor_b[k] / cor_a[k] - 1) * 100 for k in shared]
    # each collection is corrected to its own reference level; the reference configuration is the same in both,
    # so B in A's units is B x ref_A / ref_B
    level = a.drifts[0].reference_ms / b.drifts[0].reference_ms
    rel_dev = [abs(cor_b[k] * level / cor_a[k] - 1) * 100 for k in shared]

    info = machine_info()
    lat = a.table("layer").total_ms
    out_name = args.name or f"latency_own_{args.space}{'_paired' if args.paired else ''}"
    lines = [f"## Latency datasets: {args.space}{', paired' if args.paired else ''}", "",
             f"Command: `python benchmarks/latency_own.py --space {args.space} --configs {args.configs} --repeat "
             f"{args.repeat} --runs {args.runs} --vocab {args.vocab}{'' if args.cpu is None else f' --cpu {args.cpu}'}"
             f"{'' if args.warmup == 5 else f' --warmup {args.warmup}'}{' --paired' if args.paired else ''}"
             f"{'' if args.name is None else f' --name {args.name}'}"
             f"{'' if args.out_dir == DEFAULT_OUT else f' --out-dir {args.out_dir}'}`"
             f" ({datetime.date.today()}, {info['cpu']}, {info['logical_cores']} logical cores, torch {info['torch']},"
             " 1 thread).", "",
             f"Protocol: 30-token source, 30 decoder steps at beam 4, {args.runs} timed runs after {args.warmup} "
             "warm-up runs, "
             "10%/10% trimmed; " + ("every timed run right after one of the reference (the middle configuration), "
                                    "each row divided by its own reference runs' relative speed. " if args.paired else
                                    "reference probe (the middle configuration) every 10 measurements. ") +
             f"Collection A: {len(a.samples)} configurations ({lat.min():.1f}-{lat.max():.1f} ms); B: the first "
             f"{len(b.samples)} of them again, afterwards, in a shuffled order.", "",
             "| collection | probes | reference (ms) | drift min..max | spread | probe cv |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, c in (("A", a), ("B", b)):
        d = c.drifts[0].summary()
        lines.append(f"| {name} | {d['probes']} | {d['reference_ms']:.2f} | {d['min']:.3f}..{d['max']:.3f} | "
                     f"{d['spread_pct']:.1f} % | {d['cv_pct']:.2f} % |")
    lines += ["", f"Held-out error on A (drift-corrected; 80/10/10 splits, seeds 0..{args.seeds - 1}, mean ± std):",
              "", "| predictor | RMSE (ms) | MAPE (%) | max error (ms) |", "| --- | --- | --- | --- |"]
    for name, ms in fits.items():
        rmse, mape = [m.rmse_ms for m in ms], [m.mape_pct for m in ms]
        lines.append(f"| {name} | {np.mean(rmse):.2f} ± {np.std(rmse):.2f} | {np.mean(mape):.2f} ± "
                     f"{np.std(mape):.2f} | {max(m.max_abs_ms for m in ms):.2f} |")
    lines += ["", f"Repeatability on the {len(shared)} configurations in both collections (|B / A - 1|):", "",
              "| | median | p90 | max |", "| --- | --- | --- | --- |"]
    for name, dev in (("raw", raw_dev), ("drift-corrected", cor_dev),
                      (f"drift-corrected, to A's reference level (x {level:.3f})", rel_dev)):
        lines.append(f"| {name} | {np.median(dev):.2f} % | {np.percentile(dev, 90):.2f} % | {max(dev):.2f} % |")
    section = "\n".join(lines) + "\n"
    write_result(RESULTS / f"{out_name}.md", section)
    print(section)


if __name__ == "__main__":
    main()
