"""Inherited SubTransformer vs its extracted dense model, and the cost of switching.

For HAT's WMT'14 space (vocabulary 32,768) and the CPU-scale spaces (vocabulary 8,000), the smallest, a middle and
the largest configuration: latency of encoding a 30-token sentence plus 30 greedy decoding steps under HAT's
protocol, measured *interleaved run by run* (so machine drift cancels in the ratios) for the inherited views of
the SuperTransformer, the same point as the runtime serves it (``ServingModel``: strided slices copied
contiguous once) and the extracted dense model; then the time of a switch between two configurations on each
inherited path. One thread pinned to one CPU.

    python benchmarks/model_latency.py            # writes the table to results/model_latency.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).parent))
from results_file import RESULTS, write_result

from dynhat.inference.measure import machine_info, pinned, source_tokens, time_translation, trimmed_mean_std
from dynhat.model import ModelSettings, SuperTransformer, extract
from dynhat.model.serving import ServingModel
from dynhat.space import SubTransformerConfig, largest, load_space, middle, smallest

OUT = RESULTS / "model_latency.md"
SECTION = "## Inherited SubTransformer vs extracted dense model, and switching"


def interleaved(model: SuperTransformer, config: SubTransformerConfig, runs: int, warmup: int = 5
                ) -> tuple[float, float, float]:
    """Trimmed mean latency (ms) of the inherited views, the served point and dense, rotating which goes first."""
    runners = {"inherited": (model, config), "served": (ServingModel(model, [config]), config),
               "dense": (extract(model, config).eval(), None)}
    src = source_tokens(30, model.settings.vocab_size)
    times: dict[str, list[float]] = {name: [] for name in runners}
    names = list(runners)
    with torch.inference_mode():
        for _ in range(warmup):
            for m, c in runners.values():
                time_translation(m, c, src, 30)
        for i in range(runs):
            for name in names[i % 3 :] + names[: i % 3]:
                m, c = runners[name]
                enc, dec = time_translation(m, c, src, 30)
                times[name].append((enc + dec) * 1e3)
    inherited, served, dense = (trimmed_mean_std(times[name])[0] for name in names)
    return inherited, served, dense


def switch_times(switch: Callable[[SubTransformerConfig], object], a: SubTransformerConfig,
                 b: SubTransformerConfig, n: int = 1000) -> tuple[float, float, float]:
    """(first switch, median, p99) in microseconds of ``switch`` alternating between ``a`` and ``b``."""
    start = time.perf_counter()
    switch(a)
    first = (time.perf_counter() - start) * 1e6
    switch(b)
    samples = []
    for i in range(n):
        target = a if i % 2 == 0 else b
        start = time.perf_counter()
        switch(target)
        samples.append((time.perf_counter() - start) * 1e6)
    samples.sort()
    return first, statistics.median(samples), samples[int(0.99 * n) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=300, help="timed runs for the CPU-scale space (HAT: 300)")
    parser.add_argument("--wmt-runs", type=int, default=60, help="timed runs for the WMT space (large, slow)")
    parser.add_argument("--cpu", type=int, default=0, help="CPU to pin to")
    parser.add_argument("--no-write", action="store_true", help="print only, do not write results/model_latency.md")
    args = parser.parse_args()
    torch.manual_seed(0)
    rows, switches = [], []
    jobs = [("hat-wmt14-en-de", 32768, args.wmt_runs), ("multi30k-cpu", 8000, args.runs),
            ("multi30k-tiny-prenorm", 8000, args.runs)]
    with pinned([args.cpu], 1):
        for name, vocab, runs in jobs:
            space = load_space(name)
            model = SuperTransformer(space, ModelSettings(vocab_size=vocab)).eval()
            configs = {"smallest": smallest(space), "middle": middle(space), "largest": largest(space)}
            for label, config in tqdm(configs.items(), desc=name, file=sys.stderr):
                inherited, served, dense = interleaved(model, config, runs)
                rows.append((name, label, config.id, runs, inherited, served, dense))
            a, b = configs["smallest"], configs["largest"]
            model._plans.clear()
            switches.append((name, "views (`set_config`)", *switch_times(model.set_config, a, b)))
            switches.append((name, "served (`ServingModel.weights`)",
                             *switch_times(ServingModel(model).weights, a, b)))
    table = render(rows, switches, args)
    print(table)
    if not args.no_write:
        write_result(OUT, table)


def render(rows: list[tuple], switches: list[tuple], args: argparse.Namespace) -> str:
    info = machine_info()
    lines = [
        SECTION, "",
        f"Command: `python benchmarks/model_latency.py --runs {args.runs} --wmt-runs {args.wmt_runs}` "
        f"({datetime.date.today()}, {info['cpu']}, {info['logical_cores']} logical cores, torch {info['torch']}, "
        f"1 thread pinned to CPU {args.cpu}).",
        "",
        "Latency: encode a 30-token sentence + 30 greedy decoder steps (batch 1, output projection and argmax "
        "included), HAT's protocol (warm-up, trim fastest and slowest 10%, mean of the rest); inherited views, "
        "served point (strided slices copied contiguous) and dense runs interleaved. Runs: as in the table (fewer "
        "for HAT's WMT space, whose largest model takes ~0.3 s).",
        "",
        "| space | config | id | runs | views (ms) | served (ms) | dense (ms) | views / dense | served / dense |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [f"| {s} | {c} | `{i}` | {r} | {v:.2f} | {p:.2f} | {d:.2f} | {v / d:.3f} | {p / d:.3f} |"
              for s, c, i, r, v, p, d in rows]
    lines += ["", "A switch between the smallest and largest configuration, 1,000 alternating switches, and the "
              "first switch to a configuration never seen before (slicing, and for the served path copying, every "
              "tensor):", "", "| space | path | first switch (µs) | median (µs) | p99 (µs) |",
              "| --- | --- | --- | --- | --- |"]
    lines += [f"| {s} | {k} | {f:.0f} | {m:.1f} | {p:.1f} |" for s, k, f, m, p in switches]
    worst = max(r[5] / r[6] for r in rows)
    lines += ["", f"Targets: served / dense ≤ 1.03 for every configuration (worst here {worst:.3f}); "
              f"switch p99 ≤ 1 ms (worst here {max(s[4] for s in switches):.1f} µs).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
