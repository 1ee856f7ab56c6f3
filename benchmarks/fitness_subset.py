"""How small can the search's validation subset be? Fidelity of the fitness on subsets against all of val.

The search only needs the *order* of candidates of similar latency to be right. For K SubTransformers sampled
from the space (seeded), the validation loss on every sentence of val and on seeded subsets of several sizes
(the search's ``validation_subset``); per size: Spearman's rho and the share of concordant pairs against the full
loss, and the regret of the subset's choice in each latency quartile (full-set loss of the subset's best minus the
full-set best: what a search using the subset gives away), and the seconds per evaluation.

    python benchmarks/fitness_subset.py CHECKPOINT PREDICTOR --configs 48 --cpu 1
"""

from __future__ import annotations

import argparse
import datetime
import random
import sys
import time
from itertools import combinations
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).parent))
from results_file import RESULTS, write_result

from dynhat.data.fetch import load_multi30k, shared_data_dir
from dynhat.inference.checkpoint import load_trained
from dynhat.inference.measure import machine_info, pinned
from dynhat.latency.predictor import LatencyPredictor
from dynhat.search.fitness import LossFitness, validation_subset
from dynhat.search.operating_points import predictor_latency
from dynhat.space.sampling import sample

REPO = Path(__file__).resolve().parents[1]
OUT = RESULTS / "fitness_subset.md"
HEADING = "## How large a validation subset the fitness needs"


def losses(fitness: LossFitness, configs: list) -> tuple[np.ndarray, float]:  # type: ignore[type-arg]
    start = time.perf_counter()
    values = np.array([fitness(c) for c in configs])
    return values, (time.perf_counter() - start) / len(configs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("predictor", help="latency predictor of this machine (for the latency quartiles)")
    parser.add_argument("--configs", type=int, default=48)
    parser.add_argument("--sizes", default="10,25,50,100,200,400")
    parser.add_argument("--seeds", type=int, default=3, help="subset seeds per size")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--cpu", type=int, default=None, help="pin to this CPU (one thread)")
    args = parser.parse_args()
    with pinned(None if args.cpu is None else [args.cpu], 1):
        _run(args)


def _run(args: argparse.Namespace) -> None:
    """The benchmark, on ``--cpu`` (when given) with one intra-op thread."""
    model, vocab = load_trained(args.checkpoint)
    valid = load_multi30k("val", shared_data_dir() / "multi30k")
    rng = random.Random(0)
    configs = [sample(model.space, rng) for _ in range(args.configs)]
    latency = predictor_latency(LatencyPredictor.load(args.predictor))
    lat = np.array([latency(c) for c in configs])
    quartile = np.searchsorted(np.quantile(lat, [0.25, 0.5, 0.75]), lat)
    full_fitness = LossFitness(model, vocab, valid, precision=args.precision)
    full, full_s = losses(full_fitness, configs)
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        for seed in range(args.seeds):
            sub, sub_s = losses(LossFitness(model, vocab, validation_subset(valid, size, seed),
                                            precision=args.precision), configs)
            pairs = list(combinations(range(len(configs)), 2))
            concordant = np.mean([(full[i] - full[j]) * (sub[i] - sub[j]) > 0 for i, j in pairs])
            regrets = []
            for q in range(4):
                members = np.flatnonzero(quartile == q)
                regrets.append(full[members[np.argmin(sub[members])]] - full[members].min())
            rows.append((size, seed, spearmanr(full, sub).statistic, concordant, np.mean(regrets),
                         np.max(regrets), sub_s))
            print(rows[-1], flush=True)
    info = machine_info()
    lines = [HEADING, "",
             f"Command: `python benchmarks/fitness_subset.py {args.checkpoint} {args.predictor} --configs "
             f"{args.configs} --sizes {args.sizes} --seeds {args.seeds}"
             + (f" --cpu {args.cpu}" if args.cpu is not None else "") + f"` ({datetime.date.today()}, "
             f"{info['cpu']}, 1 thread, fitness precision {full_fitness.precision}).", "",
             f"{args.configs} SubTransformers sampled from {model.space.name} (seed 0); their validation loss on all "
             f"{len(valid.src)} sentences of val ({full_s:.2f} s per evaluation) against the loss on seeded subsets "
             f"(seeds 0..{args.seeds - 1} per size). Regret: in each quartile of predicted latency, the full-set "
             "loss of the subset's best minus the full-set best (bits), mean and worst of the four quartiles; "
             "averaged over the seeds.", "",
             "| sentences | Spearman rho | concordant pairs | regret, mean (bits) | regret, worst quartile (bits) "
             "| s per evaluation |", "| --- | --- | --- | --- | --- | --- |"]
    for size in sorted({r[0] for r in rows}):
        group = np.array([r[2:] for r in rows if r[0] == size])
        rho, conc, regret, _, secs = group.mean(0)
        lines.append(f"| {size} | {rho:.3f} (min {group[:, 0].min():.3f}) | {100 * conc:.1f} % | {regret:.4f} | "
                     f"{group[:, 3].max():.4f} | {secs:.3f} |")
    lines.append(f"| {len(valid.src)} (all) | 1 | 100 % | 0 | 0 | {full_s:.3f} |")
    write_result(OUT, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
