"""Search cost and quality: HAT's evolution per constraint against one NSGA-II front, on the same evaluations.

1. Unit cost: seconds per fitness evaluation (validation loss on the subset) for the smallest, middle and largest
   SubTransformer.
2. HAT's settings (population 125, 30 iterations) for 6 constraints, run with an analytic stand-in score (exact
   MAC count) so the count of evaluations is exact and cheap to get: evaluations without a cache (HAT re-scores
   everything every iteration), with a cache per constraint, and with one cache shared by all constraints; times
   the measured unit cost gives the wall time of each on this machine.
3. The real thing at a budget this machine can afford: HAT's evolution (``--population``, ``--iterations``) for the
   6 constraints with the real fitness and a shared cache, timed; then NSGA-II with the same number of evaluations;
   validation loss of the point each mode picks per constraint.

    python benchmarks/search_modes.py CHECKPOINT PREDICTOR --cpu 1
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from results_file import RESULTS, write_result

from dynhat.data.fetch import load_multi30k, shared_data_dir
from dynhat.inference.checkpoint import load_trained
from dynhat.inference.measure import machine_info, pinned
from dynhat.latency.predictor import LatencyPredictor
from dynhat.search.evolution import EvolutionSettings, evolve, fastest_latency
from dynhat.search.fitness import LossFitness, validation_subset
from dynhat.search.operating_points import predictor_latency
from dynhat.search.pareto import pareto_search, pick
from dynhat.space.cost import count_macs
from dynhat.space.sampling import largest, middle, smallest

REPO = Path(__file__).resolve().parents[1]
OUT = RESULTS / "search_modes.md"
HEADING = "## Search cost and the two search modes"


class Counting:
    """A score with counters: every call, and the distinct configurations (what a cache would evaluate)."""

    def __init__(self, score) -> None:  # type: ignore[no-untyped-def]
        self.score, self.calls, self.seen = score, 0, set()

    def __call__(self, config) -> float:  # type: ignore[no-untyped-def]
        self.calls += 1
        self.seen.add(config.id)
        return self.score(config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("predictor")
    parser.add_argument("--valid-sentences", type=int, default=100)
    parser.add_argument("--population", type=int, default=40)
    parser.add_argument("--iterations", type=int, default=8)
    parser.add_argument("--cpu", type=int, default=None)
    args = parser.parse_args()
    # one thread for the fits and evaluations too: two threads on one pinned core stall each other
    with pinned(None if args.cpu is None else [args.cpu], 1):
        _run(args)


def _run(args: argparse.Namespace) -> None:
    """The benchmark, on ``--cpu`` (when given) with one intra-op thread."""
    model, vocab = load_trained(args.checkpoint)
    space = model.space
    predictor = LatencyPredictor.load(args.predictor)
    latency = predictor_latency(predictor)
    valid = validation_subset(load_multi30k("val", shared_data_dir() / "multi30k"), args.valid_sentences)
    lo, hi = latency(smallest(space)), latency(largest(space))
    constraints = [round(lo * 1.05 + (hi - lo * 1.05) * i / 5, 1) for i in range(6)]
    fastest = fastest_latency(space, latency)
    lines = [HEADING, "", f"Command: `python benchmarks/search_modes.py {args.checkpoint} {args.predictor} "
             f"--valid-sentences {args.valid_sentences} --population {args.population} --iterations "
             f"{args.iterations}{'' if args.cpu is None else f' --cpu {args.cpu}'}` ({datetime.date.today()}, "
             f"{machine_info()['cpu']}, 1 thread). Constraints (predicted ms): "
             f"{', '.join(f'{c:g}' for c in constraints)}.", ""]
    fitness = LossFitness(model, vocab, valid)
    unit = {}
    for name, config in (("smallest", smallest(space)), ("middle", middle(space)), ("largest", largest(space))):
        times = []
        for _ in range(3):
            fitness.cache.clear()
            start = time.perf_counter()
            fitness(config)
            times.append(time.perf_counter() - start)
        unit[name] = statistics.median(times)
    per_eval = statistics.fmean(unit.values())
    lines += [f"Unit cost: one validation loss on {len(valid.src)} sentences takes "
              + ", ".join(f"{v:.2f} s ({k})" for k, v in unit.items()) + f"; mean {per_eval:.2f} s.", ""]

    hat = EvolutionSettings()
    stand_in = Counting(lambda c: -count_macs(c, space, len(vocab)) / 1e9)
    per_constraint_unique = 0
    for c in constraints:
        local = Counting(stand_in)
        evolve(space, local, latency, c, hat, progress=False, fastest_ms=fastest)
        per_constraint_unique += len(local.seen)
    lines += ["HAT's settings (population 125, 30 iterations), 6 constraints; evaluation counts from a run with an "
              "analytic stand-in score, wall time = count x the mean unit cost above:", "",
              "| fitness evaluations | count | estimated time on this machine |", "| --- | --- | --- |"]
    for name, count in (("no cache (HAT: every member, every iteration)", stand_in.calls),
                        ("cache per constraint", per_constraint_unique),
                        ("one cache shared by the 6 constraints", len(stand_in.seen))):
        lines.append(f"| {name} | {count:,} | {count * per_eval / 60:.0f} min |")

    budget = EvolutionSettings.for_population(args.population, iterations=args.iterations)
    fitness.cache.clear()
    fitness.evaluations = fitness.lookups = 0
    start = time.perf_counter()
    evo = {c: evolve(space, fitness, latency, c, budget, progress=True, fastest_ms=fastest) for c in constraints}
    evo_s, evo_evals = time.perf_counter() - start, fitness.evaluations
    fitness_pareto = LossFitness(model, vocab, valid)
    generations = max(1, round(evo_evals / args.population))
    start = time.perf_counter()
    front = pareto_search(space, fitness_pareto, latency, args.population, generations, progress=True)
    par_s, par_evals = time.perf_counter() - start, fitness_pareto.evaluations
    lines += ["", f"Affordable budget, real fitness: HAT's evolution with population {args.population} and "
              f"{args.iterations} iterations per constraint and one shared cache: {evo_evals} evaluations, "
              f"{evo_s / 60:.1f} min for the 6 constraints ({evo_s / 6:.0f} s each); NSGA-II with population "
              f"{args.population} for {generations} generations: {par_evals} evaluations, {par_s / 60:.1f} min, "
              f"a front of {len(front)} points.", "",
              "| constraint (ms) | evolution: loss | latency (ms) | NSGA-II front: loss | latency (ms) |",
              "| --- | --- | --- | --- | --- |"]
    for c in constraints:
        e, p = evo[c], pick(front, c)
        lines.append(f"| {c:g} | {e.loss:.4f} | {e.latency_ms:.1f} | "
                     + (f"{p.loss:.4f} | {p.latency_ms:.1f} |" if p else "none | |"))
    section = "\n".join(lines) + "\n"
    write_result(OUT, section)
    print(section)


if __name__ == "__main__":
    main()
