"""Resident memory of a process serving a library's points: dynhat's service over an engine folder (no torch)
against CTranslate2 alone holding the same points, and dynhat's service over the SuperTransformer (torch).

Each row is a fresh process, started one after another on the same CPUs:

- CTranslate2 alone: imports ctranslate2 and sentencepiece, loads every point's model of the engine folder (as
  exported, 1 thread) and translates the sentences on each: what a CTranslate2 user pays to hold these points.
- ``dynhat serve ENGINE_DIR``: the HTTP service (uvicorn on 127.0.0.1), calibrated at start, then sent the
  sentences under one budget per point (1.2x each point's calibrated latency), so every point serves; with
  ``--threads N`` also ``dynhat serve ENGINE_DIR --threads N`` (each model loaded at 1..N threads, for the
  runtime's thread adaptation).
- with ``--release``: ``dynhat serve RELEASE --points ENGINE_DIR/points.yml`` at ``--precision`` fp32 and int8 (the
  same points from the SuperTransformer's shared weights, through torch).

Resident memory (``VmRSS``) after the requests and the peak (``VmHWM``), in MB; the ratio is to CTranslate2 alone.

    python benchmarks/serving_memory.py ENGINE_DIR [--release multi30k-en-de] [--threads 2] [--cpus 1]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from results_file import RESULTS, write_result

OUT = RESULTS / "serving_memory.md"
SENTENCES = ["A dog runs through the snow.", "Two men are playing football in a park.",
             "A woman in a red coat is waiting for the bus.", "Children are jumping into a swimming pool.",
             "An old man sits on a bench and reads a newspaper.", "A group of people stand in front of a building."]
CT2_ALONE = """
import json, sys
import ctranslate2, sentencepiece
from pathlib import Path
folder, sentences = Path(sys.argv[1]), json.loads(sys.argv[2])
sp = sentencepiece.SentencePieceProcessor(model_file=str(folder / "vocab.model"))
engines = [ctranslate2.Translator(str(p), device="cpu", intra_threads=1, inter_threads=1)
           for p in sorted((folder / "points").iterdir())]
for engine in engines:
    engine.translate_batch([sp.encode(s, out_type=str) for s in sentences], beam_size=4)
status = dict(line.split(":", 1) for line in open("/proc/self/status", encoding="utf-8"))
print(json.dumps({"points": len(engines), "rss_mb": int(status["VmRSS"].split()[0]) / 1024,
                  "peak_mb": int(status["VmHWM"].split()[0]) / 1024, "torch": "torch" in sys.modules}))
"""


def _memory(pid: int) -> tuple[float, float]:
    with open(f"/proc/{pid}/status", encoding="utf-8") as handle:
        status = dict(line.split(":", 1) for line in handle)
    return int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _call(url: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as reply:
        return json.loads(reply.read())


def served(label: str, command: list[str], cpus: list[int]) -> dict:
    """Start ``dynhat serve`` (``command``), wait until it answers, send every point its requests, read memory."""
    port = _free_port()
    process = subprocess.Popen([sys.executable, "-m", "dynhat", "serve", *command, "--budget-ms", "1000",
                                "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               preexec_fn=lambda: os.sched_setaffinity(0, cpus))
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(1200):
            if process.poll() is not None:
                raise SystemExit(f"{label}: the service stopped: {process.stderr.read().decode()[-500:]}")  # type: ignore[union-attr]
            try:
                status = _call(base + "/status")
                break
            except OSError:
                time.sleep(0.5)
        used = set()
        for point in status["points"]:
            reply = _call(base + "/translate", {"sentences": SENTENCES, "budget_ms": 1.2 * point["calibrated_ms"]})
            used |= {t["point"] for t in reply["translations"]}
        rss, peak = _memory(process.pid)
        torch = "libtorch" in Path(f"/proc/{process.pid}/maps").read_text()
        models = len({re.sub(r"-b\d+$", "", p["id"]) for p in status["points"]})
        return {"label": label, "points": len(status["points"]), "used": len(used), "rss_mb": rss, "peak_mb": peak,
                "torch": torch, "weights": "the SuperTransformer" if torch else f"{models} SubTransformers"}
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("engine", help="engine folder (dynhat export --engine ctranslate2)")
    parser.add_argument("--release", default=None, help="also serve the points from this SuperTransformer (torch)")
    parser.add_argument("--threads", type=int, default=1, help="also serve the engine folder at up to N threads")
    parser.add_argument("--cpus", type=lambda s: [int(c) for c in s.split(",")], default=None)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    cpus = args.cpus or sorted(os.sched_getaffinity(0))
    alone = subprocess.run([sys.executable, "-c", CT2_ALONE, args.engine, json.dumps(SENTENCES)], check=True,
                           capture_output=True, text=True, preexec_fn=lambda: os.sched_setaffinity(0, cpus))
    rows = [{"label": "CTranslate2 alone"} | json.loads(alone.stdout.strip().splitlines()[-1])]
    rows[0] |= {"used": rows[0]["points"], "weights": f"{rows[0]['points']} SubTransformers"}
    rows.append(served("dynhat serve ENGINE_DIR", [args.engine], cpus))
    if args.threads > 1:
        rows.append(served(f"dynhat serve ENGINE_DIR --threads {args.threads}",
                           [args.engine, "--threads", str(args.threads)], cpus))
        rows[-1]["weights"] += f" x {args.threads} thread counts"
    if args.release:
        for precision in ("fp32", "int8"):
            rows.append(served(f"dynhat serve {args.release} --precision {precision}",
                               [args.release, "--points", str(Path(args.engine) / "points.yml"), "--precision",
                                precision], cpus))
    floor = rows[0]["rss_mb"]
    table = ["| process | weights held | points (serving a request here) | torch loaded | RSS MB | peak MB | "
             "RSS / CTranslate2 alone |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        print(r, flush=True)
        table.append(f"| {r['label']} | {r['weights']} | {r['points']} ({r['used']}) | "
                     f"{'yes' if r['torch'] else 'no'} | {r['rss_mb']:.0f} | {r['peak_mb']:.0f} | "
                     f"{r['rss_mb'] / floor:.2f} |")
    meta = json.loads((Path(args.engine) / "engine.json").read_text())
    write_result(args.out, "\n".join([
        "## Memory of a serving process", "",
        f"`python benchmarks/serving_memory.py {args.engine}" + (f" --release {args.release}" if args.release else "")
        + (f" --threads {args.threads}" if args.threads > 1 else "")
        + f"` ({datetime.date.today()}, CPUs {cpus}). Engine folder: CTranslate2 {meta['version']}, "
        f"{meta['quantization']}.", "", *table]))


if __name__ == "__main__":
    main()
