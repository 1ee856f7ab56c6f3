"""From a fresh process to its first served translation with the shipped release (or a given one): time and memory.

Each repetition starts a new Python process that imports dynhat, loads the release (``dynhat.pretrained(NAME)``, or
``load_release(PATH)``: every file checked against the manifest), builds a ``Translator`` for one SubTransformer
(``--config``, default the largest, at beam 4: the slowest point) and translates one sentence, all under
``pinned(cpus, threads)`` once torch is imported. The parent times the process from its spawn to the translation's
arrival; the child reports its phases (import, load, first translation) and its resident memory: peak
(``ru_maxrss``) and steady (``VmRSS`` after the translation).

    python benchmarks/load_pretrained.py [multi30k-en-de | RELEASE_DIR] --repeat 5 --cpus 1 --threads 1
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from results_file import RESULTS, write_result

OUT = RESULTS / "load_pretrained.md"
SENTENCE = "A dog runs through the snow."
CHILD = """
import json, resource, sys, time
start = time.perf_counter()
import dynhat
from dynhat.inference.measure import pinned
from dynhat.translate.translator import Translator
from dynhat.space import resolve_config
imported = time.perf_counter()
release, config_name, cpus, threads, sentence = json.loads(sys.argv[1])
with pinned(cpus, threads):
    if release in dynhat.shipped_releases():
        model, vocab = dynhat.pretrained(release)
    else:
        from dynhat.inference.release import load_release
        model, vocab = load_release(release)
    loaded = time.perf_counter()
    config = resolve_config(config_name, model.space)
    text = Translator(model, vocab, config, beam=4).translate([sentence])[0]
    served = time.perf_counter()
with open("/proc/self/status", encoding="utf-8") as handle:
    steady = next(int(line.split()[1]) for line in handle if line.startswith("VmRSS:"))
print(json.dumps({"import_s": imported - start, "load_s": loaded - imported, "first_s": served - loaded,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "steady_mb": steady / 1024,
                  "config": config.id, "text": text}), flush=True)
"""


def one_run(release: str, config: str, cpus: list[int] | None, threads: int) -> dict[str, float | str]:
    """One fresh process: its wall time from spawn to the translation, and what it reports."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps([release, config, cpus, threads, SENTENCE])],
                          capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"the child process failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1]) | {"wall_s": wall}


def report(args: argparse.Namespace, runs: list[dict[str, float | str]], machine: dict[str, object]) -> str:
    keys = ("wall_s", "import_s", "load_s", "first_s", "peak_mb", "steady_mb")
    rows = ["| run | " + " | ".join(keys) + " |", "|" + " --- |" * (len(keys) + 1)]
    rows += [f"| {i + 1} | " + " | ".join(f"{float(r[k]):.2f}" for k in keys) + " |" for i, r in enumerate(runs)]
    rows.append("| median | " + " | ".join(f"{statistics.median(float(r[k]) for r in runs):.2f}" for k in keys)
                + " |")
    rows.append("| max | " + " | ".join(f"{max(float(r[k]) for r in runs):.2f}" for k in keys) + " |")
    return "\n".join([
        "## Loading the shipped model and serving the first request", "",
        f"`python benchmarks/load_pretrained.py {args.release} --repeat {args.repeat} --cpus "
        f"{','.join(map(str, args.cpus or []))} --threads {args.threads}` ({datetime.date.today()}, {machine['cpu']}, "
        f"{machine['logical_cores']} cores, torch {machine['torch']}). SubTransformer `{runs[0]['config']}` at beam 4; "
        f"sentence: \"{SENTENCE}\" -> \"{runs[0]['text']}\". Seconds from the process's spawn (wall) and per phase; "
        "resident memory in MB.", "", *rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("release", nargs="?", default="multi30k-en-de", help="shipped name or release folder")
    parser.add_argument("--config", default="largest", help="SubTransformer served (largest, smallest, an id...)")
    parser.add_argument("--repeat", type=int, default=5, help="fresh processes")
    parser.add_argument("--cpus", type=lambda s: [int(c) for c in s.split(",")], default=None,
                        help="CPUs of the child (comma-separated; default all)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    from dynhat.inference.measure import machine_info

    runs = [one_run(args.release, args.config, args.cpus, args.threads) for _ in range(args.repeat)]
    for r in runs:
        print(f"wall {float(r['wall_s']):.2f} s (import {float(r['import_s']):.2f}, load {float(r['load_s']):.2f}, "
              f"first translation {float(r['first_s']):.2f}); RSS peak {float(r['peak_mb']):.0f} MB, steady "
              f"{float(r['steady_mb']):.0f} MB", flush=True)
    cpus = args.cpus or sorted(os.sched_getaffinity(0))
    write_result(args.out, report(args, runs, machine_info()) + f"\n\nChild CPUs: {cpus}.")


if __name__ == "__main__":
    main()
