"""Why the runtime sizes its thread count from the free cores: latency at 1..N threads under competing busy processes.

Translates the same test sentences with the smallest and the largest SubTransformer of a checkpoint at each thread
count, while 0..N busy processes (the scenario's background load) run on the same CPUs. Writes
results/thread_contention.md. Needs an otherwise idle machine.

    python benchmarks/thread_contention.py runs/full/checkpoint_best.pt
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from results_file import RESULTS, write_result

from dynhat.data.fetch import load_multi30k, shared_data_dir
from dynhat.inference.checkpoint import load_trained
from dynhat.inference.measure import machine_info, pinned
from dynhat.runtime.load import background_load
from dynhat.space.sampling import largest, smallest
from dynhat.translate.translator import Translator

REPO = Path(__file__).resolve().parents[1]
OUT = RESULTS / "thread_contention.md"
HEADING = "## Threads against competing load"


def _latency(translator: Translator, sources: list[str]) -> tuple[float, float]:
    """Median and largest milliseconds of translating each of ``sources`` alone, after a warm-up."""
    translator.hypotheses(sources[:2])  # warm-up
    lat = []
    for s in sources:
        start = time.perf_counter()
        translator.hypotheses([s])
        lat.append((time.perf_counter() - start) * 1e3)
    return statistics.median(lat), max(lat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--sentences", type=int, default=20)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    model, vocab = load_trained(args.checkpoint)
    sources = load_multi30k("test_2016_flickr", shared_data_dir() / "multi30k").src[: args.sentences]
    rows = []
    for name, config in (("smallest", smallest(model.space)), ("largest", largest(model.space))):
        translator = Translator(model, vocab, config, beam=4)
        for load in range(cores + 1):
            with background_load(load, None):
                time.sleep(0.5)
                medians = {}
                for threads in range(1, cores + 1):
                    with pinned(None, threads):
                        medians[threads] = _latency(translator, sources)
            rows.append((name, load, medians))
            print(name, load, medians, flush=True)
    info = machine_info()
    head = " | ".join(f"{t} thread{'s' if t > 1 else ''}: median (max) ms" for t in range(1, cores + 1))
    lines = [HEADING, "", f"Command: `python benchmarks/thread_contention.py {args.checkpoint}` "
             f"({datetime.date.today()}, {info['cpu']}, {cores} logical cores, torch {info['torch']}); "
             f"{args.sentences} test_2016_flickr sentences, beam 4, one at a time.", "",
             f"| SubTransformer | busy processes | {head} |", "|" + " --- |" * (2 + cores)]
    for name, load, medians in rows:
        cells = " | ".join(f"{m:.1f} ({x:.1f})" for m, x in medians.values())
        lines.append(f"| {name} | {load} | {cells} |")
    write_result(OUT, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
