"""The search's fitness in float32 and under bfloat16 autocast: time and the largest loss difference.

Six SubTransformers (largest, smallest, four sampled with seeds 0-3) scored on a seeded validation subset, each
precision twice (alternating), one thread on one CPU.

    python benchmarks/fitness_precision.py CHECKPOINT --cpu 1
"""

from __future__ import annotations

import argparse
import datetime
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from results_file import RESULTS, write_result

from dynhat.data.fetch import load_multi30k, shared_data_dir
from dynhat.inference.checkpoint import load_trained
from dynhat.inference.measure import machine_info, pinned
from dynhat.search.fitness import LossFitness, validation_subset
from dynhat.space.sampling import largest, sample, smallest

OUT = RESULTS / "fitness_precision.md"
HEADING = "## Fitness precision: float32 and bfloat16"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--valid-sentences", type=int, default=100)
    parser.add_argument("--cpu", type=int, default=None)
    args = parser.parse_args()
    with pinned(None if args.cpu is None else [args.cpu], 1):
        _run(args)


def _run(args: argparse.Namespace) -> None:
    """The benchmark, on ``--cpu`` (when given) with one intra-op thread."""
    model, vocab = load_trained(args.checkpoint)
    valid = validation_subset(load_multi30k("val", shared_data_dir() / "multi30k"), args.valid_sentences)
    configs = [largest(model.space), smallest(model.space)] + [sample(model.space, random.Random(i)) for i in range(4)]
    seconds: dict[str, list[float]] = {"float32": [], "bfloat16": []}
    losses: dict[str, list[float]] = {}
    for precision in ("float32", "bfloat16") * 2:
        fitness = LossFitness(model, vocab, valid, precision=precision)
        start = time.perf_counter()
        losses[precision] = [fitness(c) for c in configs]
        seconds[precision].append(time.perf_counter() - start)
    f32, b16 = min(seconds["float32"]), min(seconds["bfloat16"])
    diff = max(abs(a - b) for a, b in zip(losses["float32"], losses["bfloat16"], strict=True))
    lines = [HEADING, "",
             f"Command: `python benchmarks/fitness_precision.py {args.checkpoint} --valid-sentences "
             f"{args.valid_sentences}" + (f" --cpu {args.cpu}" if args.cpu is not None else "")
             + f"` ({datetime.date.today()}, {machine_info()['cpu']}, 1 thread).", "",
             f"Six SubTransformers on {len(valid.src)} validation sentences, the faster of two passes each: float32 "
             f"{f32:.2f} s, bfloat16 autocast {b16:.2f} s (**{f32 / b16:.2f}x**); largest loss difference "
             f"{diff:.4f} bits."]
    write_result(OUT, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
