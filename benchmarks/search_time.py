"""Search time with HAT's settings and the real fitness, for 6 constraints (the issue's 10-minute target).

HAT's evolution (population 125 = 25 parents + 50 mutations + 50 crossovers, mutation probability 0.3, 30
iterations) for 6 constraints evenly spread over the predicted latency range, fitness = validation loss on a
seeded subset (``--valid-sentences``), one score cache shared by the constraints, ``--workers`` fitness processes,
``--precision`` of the passes, optional ``--patience`` (stop a constraint after that many iterations without a
better loss). Timed end to end (the search only: no on-device check, no BLEU). Each winner is then scored on all
of val, so a small subset's choices can be judged on the full set.

    python benchmarks/search_time.py CHECKPOINT PREDICTOR --valid-sentences 25 --workers 2
"""

from __future__ import annotations

import argparse
import datetime
import os
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
from dynhat.space.sampling import largest, smallest

REPO = Path(__file__).resolve().parents[1]
OUT = RESULTS / "search_time.md"
HEADING = "## Search time with HAT's settings"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("predictor")
    parser.add_argument("--valid-sentences", type=int, default=100)
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--patience", type=int, default=None)
    parser.add_argument("--iterations", type=int, default=30, help="HAT: 30 (fewer only to try the script)")
    parser.add_argument("--label", default=None, help="row label in the docs table (default: the settings)")
    parser.add_argument("--out", type=Path, default=OUT,
                        help="markdown file to update (default results/search_time.md; earlier settings' rows kept)")
    args = parser.parse_args()
    with pinned(None, 1):
        _run(args)


def _run(args: argparse.Namespace) -> None:
    """The benchmark, with one intra-op thread."""
    model, vocab = load_trained(args.checkpoint)
    space = model.space
    latency = predictor_latency(LatencyPredictor.load(args.predictor))
    val = load_multi30k("val", shared_data_dir() / "multi30k")
    lo, hi = latency(smallest(space)), latency(largest(space))
    constraints = [round(lo * 1.05 + (hi - lo * 1.05) * i / 5, 1) for i in range(6)]
    fastest = fastest_latency(space, latency)
    settings = EvolutionSettings(iterations=args.iterations, patience=args.patience)
    subset = validation_subset(val, args.valid_sentences)
    with LossFitness(model, vocab, subset, precision=args.precision, workers=args.workers) as fitness:
        start = time.perf_counter()
        results = [evolve(space, fitness, latency, c, settings, progress=True, fastest_ms=fastest)
                   for c in constraints]
        seconds = time.perf_counter() - start
        evaluations, hits, precision = fitness.evaluations, fitness.hits, fitness.precision
    with LossFitness(model, vocab, val, precision=args.precision, workers=args.workers) as full:
        full_losses = full.many([r.config for r in results])
    label = args.label or (f"{args.valid_sentences} sentences, {args.workers} worker(s), {precision}"
                           + (f", patience {args.patience}" if args.patience else ""))
    row = (f"| {label} | {evaluations:,} | {hits:,} | {sum(r.iterations for r in results)} | "
           f"**{seconds / 60:.1f} min** | " + " / ".join(f"{x:.3f}" for x in full_losses) + " |")
    command = (f"`python benchmarks/search_time.py {args.checkpoint} {args.predictor} --valid-sentences "
               f"{args.valid_sentences} --workers {args.workers} --precision {args.precision}"
               + (f" --patience {args.patience}" if args.patience else "")
               + (f" --iterations {args.iterations}" if args.iterations != 30 else "") + f"` ({datetime.date.today()})")
    text = args.out.read_text(encoding="utf-8") if args.out.exists() else ""
    rows: list[str] = []
    if HEADING in text:  # keep the rows of earlier settings, replace this one's
        section = text.split(HEADING, 1)[1].split("\n## ", 1)[0]
        rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| settings")
                and not line.startswith("| ---") and not line.startswith(f"| {label} |")]
        commands = [line for line in section.splitlines() if line.startswith("- `python")
                    and f"--valid-sentences {args.valid_sentences} --workers {args.workers} " not in line]
    else:
        commands = []
    lines = [HEADING, "",
             f"HAT's evolution with HAT's settings (population 125 = 25 parents + 50 mutations + 50 crossovers, "
             f"mutation probability 0.3, 30 iterations) for 6 constraints ({', '.join(f'{c:g}' for c in constraints)}"
             f" ms predicted), real fitness (validation loss on a seeded subset of val), one score cache shared by "
             f"the 6 constraints; search only (no on-device check, no BLEU), on {machine_info()['cpu']} "
             f"({len(os.sched_getaffinity(0))} CPUs), one thread per fitness worker. Last column: each winner's loss "
             f"on all {len(val.src)} sentences of val (bits), fastest constraint first.", "",
             "| settings | evaluations | cache hits | iterations | search time | winners' loss on all of val |",
             "| --- | --- | --- | --- | --- | --- |", *rows, row, "", "Commands:", "", *commands,
             f"- {command}"]
    write_result(args.out, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
