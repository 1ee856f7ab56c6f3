"""What the dynamic runtime adds to CTranslate2: each point of an engine folder served through
``DynamicTranslator`` (held on that point by ``FixedPolicy``) against the same CTranslate2 model called alone.

Per sentence and point, in turn (the order rotating with the sentence, so machine drift hits both alike), one
pinned thread: the wall time of ``translate_one`` (tokenizing, the controller's choice, the engine, detokenizing,
the cost model's update) and of ``CT2Translator.translate`` on the same sentence; mean, p90 and their ratio.
No torch is imported.

    python benchmarks/engine_runtime.py ENGINE_DIR [--sentences 200] [--cpu 1]
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

from dynhat.data.fetch import fetch_multi30k, load_multi30k, shared_data_dir
from dynhat.inference.engine import load_engine
from dynhat.runtime.controller import FixedPolicy
from dynhat.runtime.costs import PointCost
from dynhat.runtime.dynamic import DynamicTranslator

OUT = RESULTS / "engine_runtime.md"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("engine", help="engine folder (dynhat export --engine ctranslate2)")
    parser.add_argument("--sentences", type=int, default=200, help="first N of test_2016_flickr")
    parser.add_argument("--cpu", type=int, default=1)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    os.sched_setaffinity(0, {args.cpu})
    engine = load_engine(args.engine)
    points = engine.library.efficient()
    backend = engine.backend()
    costs = [PointCost(1.0, 1.0)] * len(points)  # FixedPolicy serves its point whatever the costs say
    runtimes = [DynamicTranslator(None, engine.vocab, engine.library, 60_000.0, FixedPolicy(i), costs=costs,
                                  threads=1, adapt_threads=False, backend=backend) for i in range(len(points))]
    alone = [backend.translator(p) for p in points]
    local = shared_data_dir() / "multi30k"
    sentences = load_multi30k("test_2016_flickr", fetch_multi30k(mirror=local if local.is_dir() else None,
                                                                  progress=False)).src[: args.sentences]
    times: dict[tuple[int, str], list[float]] = {(i, k): [] for i in range(len(points)) for k in ("runtime", "alone")}
    same = [0] * len(points)
    for i in range(len(points)):  # warm-up
        runtimes[i].translate_one(sentences[0])
        alone[i].translate(sentences[:1])
    for n, sentence in enumerate(sentences):
        for i in [(n + k) % len(points) for k in range(len(points))]:
            order = ("runtime", "alone") if n % 2 else ("alone", "runtime")
            for kind in order:
                start = time.perf_counter()
                if kind == "runtime":
                    text = runtimes[i].translate_one(sentence).text
                else:
                    reference = alone[i].translate([sentence])[0]
                times[(i, kind)].append((time.perf_counter() - start) * 1e3)
            same[i] += text == reference
    rows = ["| point | beam | CTranslate2 alone mean ms | p90 | through the runtime mean ms | p90 | runtime / alone | "
            "same output |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for i, p in enumerate(points):
        a, r = times[(i, "alone")], times[(i, "runtime")]
        p90 = [statistics.quantiles(x, n=10)[-1] for x in (a, r)]
        rows.append(f"| `{p.id}` | {p.beam} | {statistics.fmean(a):.2f} | {p90[0]:.2f} | {statistics.fmean(r):.2f} | "
                    f"{p90[1]:.2f} | {statistics.fmean(r) / statistics.fmean(a):.3f} | {same[i]}/{len(sentences)} |")
    text = "\n".join(["## The runtime on CTranslate2", "",
                      f"`python benchmarks/engine_runtime.py {args.engine} --sentences {args.sentences} --cpu "
                      f"{args.cpu}` ({datetime.date.today()}, CTranslate2 {engine.meta['version']}, "
                      f"{engine.quantization}, CPU {args.cpu}, torch imported: {'torch' in sys.modules}).", "", *rows])
    print(text)
    write_result(args.out, text)


if __name__ == "__main__":
    main()
