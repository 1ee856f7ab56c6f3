"""Load test of ``dynhat serve`` on 127.0.0.1: concurrent clients for a fixed time while the budget and the server's
free cores change.

Starts the service as a subprocess, then runs ``--clients`` asyncio clients (httpx) that each post one to four
Multi30k test sentences at a time, a budget changer (``PUT /budget`` with the service's token every 2 s) and a
resource changer (every 5 s the server's CPUs alternate between all of them and one, and a busy process comes and
goes). Reports requests/s, p50/p99 request latency, status counts, errors (anything but 200; 503 with Retry-After is
the service's documented answer to overload and counted apart), mixed outputs (a response whose translations do not
match its own sentences in number, or whose source lengths in subwords are not its own sentences') and the server's
RSS at the start, after a warm-up and at the end. Without ``--points`` it builds a small library of the checkpoint's
ladder SubTransformers (latency measured here, validation loss on 100 sentences) so any checkpoint can be loaded.

    python benchmarks/load_test.py CHECKPOINT [--points LIB] --seconds 60 --clients 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
from results_file import RESULTS, write_result

from dynhat.data.fetch import fetch_multi30k, load_multi30k
from dynhat.inference.checkpoint import load_trained
from dynhat.inference.measure import machine_info, measure_latency, pinned
from dynhat.inference.points import OperatingPoint, PointLibrary, file_sha256
from dynhat.search.fitness import LossFitness, validation_subset
from dynhat.space import ladder


def build_library(checkpoint: Path, out: Path, count: int, mirror: str | None) -> Path:
    """A library of ``count`` ladder SubTransformers: latency measured here (one pinned thread), loss on 100 val
    sentences. Enough for a load test; a real deployment uses ``dynhat search``."""
    model, vocab = load_trained(checkpoint)
    valid = validation_subset(load_multi30k("val", fetch_multi30k(None, mirror, progress=False)), 100)
    fitness = LossFitness(model, vocab, valid)
    points = []
    with pinned([sorted(os.sched_getaffinity(0))[-1]], 1):
        for config in ladder(model.space, count):
            ms = measure_latency(model, config, runs=20, warmup=3).total_ms
            points.append(OperatingPoint(config, ms, ms, fitness(config), ms))
    library = PointLibrary(points, model.space.name, {"path": str(checkpoint), "sha256": file_sha256(checkpoint)},
                           machine_info(), 1, space_definition=model.space.to_dict())
    library.save(out)
    return out


def _spin() -> None:  # pragma: no cover - a busy child process
    x = 0
    while True:
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF


async def _client(http: httpx.AsyncClient, sentences: dict[str, int], stop: float, seed: int, log: list[dict]) \
        -> None:
    """``sentences``: each test sentence with its length in subwords, which every answer reports back."""
    rng = random.Random(seed)
    pool = sorted(sentences)
    while time.monotonic() < stop:
        batch = rng.sample(pool, rng.randint(1, 4))
        start = time.perf_counter()
        try:
            response = await http.post("/translate", json={"sentences": batch})
            status = response.status_code
            body = response.json() if status == 200 else {}
        except httpx.HTTPError as err:
            status, body = f"{type(err).__name__}", {}
        record = {"status": status, "seconds": time.perf_counter() - start, "mixed": False}
        if status == 200:
            outputs = body.get("translations", [])
            record["mixed"] = len(outputs) != len(batch) or any(o["src_tokens"] != sentences[s]
                                                                for o, s in zip(outputs, batch, strict=False))
        elif status == 503:
            await asyncio.sleep(float(response.headers.get("Retry-After", "1")) / 10)
        log.append(record)


async def _budgets(http: httpx.AsyncClient, token: str, stop: float, budgets: list[float], log: list[int]) -> None:
    i = 0
    while time.monotonic() < stop:
        response = await http.put("/budget", json={"budget_ms": budgets[i % len(budgets)]},
                                  headers={"Authorization": f"Bearer {token}"})
        log.append(response.status_code)
        i += 1
        await asyncio.sleep(2.0)


async def _resources(server: psutil.Process, stop: float, log: list[str]) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    busy: multiprocessing.Process | None = None
    phase = 0
    while time.monotonic() < stop:
        few = phase % 2 == 1
        for proc in [server, *server.children(recursive=True)]:
            proc.cpu_affinity(cpus[:1] if few else cpus)
        if phase % 4 == 2:
            busy = multiprocessing.Process(target=_spin, daemon=True)
            busy.start()
        elif busy is not None:
            busy.terminate()
            busy = None
        log.append(f"{server.memory_info().rss / 2**20:.0f}")
        phase += 1
        await asyncio.sleep(5.0)
    if busy is not None:
        busy.terminate()


async def _run(port: int, token: str, server: psutil.Process, sentences: dict[str, int], seconds: float, clients: int,
               budgets: list[float]) -> tuple[list[dict], list[int], list[str]]:
    log: list[dict] = []
    budget_log: list[int] = []
    resource_log: list[str] = []
    stop = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120) as http:
        await asyncio.gather(*(_client(http, sentences, stop, seed, log) for seed in range(clients)),
                             _budgets(http, token, stop, budgets, budget_log),
                             _resources(server, stop, resource_log))
    return log, budget_log, resource_log


def _wait_ready(port: int, process: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the service exited with code {process.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise SystemExit("the service did not become ready")


def _large_body(port: int, server: psutil.Process, megabytes: int = 50) -> tuple[int, float]:
    """A body of ``megabytes`` streamed without a length: its status and the server's RSS growth (MB)."""
    def chunks() -> Iterator[bytes]:
        yield b'{"text": "'
        for _ in range(megabytes):
            yield b"x" * 2**20

    before = server.memory_info().rss
    status = httpx.post(f"http://127.0.0.1:{port}/translate", content=chunks(), timeout=120,
                        headers={"content-type": "application/json"}).status_code
    return status, (server.memory_info().rss - before) / 2**20


def _report(args: argparse.Namespace, log: list[dict], budget_log: list[int], resources: list[str],
            rss: tuple[float, float, float], large: tuple[int, float]) -> str:
    done = [r for r in log if r["status"] == 200]
    seconds = sorted(r["seconds"] * 1000 for r in done)
    statuses: dict[str, int] = {}
    for r in log:
        statuses[str(r["status"])] = statuses.get(str(r["status"]), 0) + 1
    errors = sum(n for s, n in statuses.items() if s not in ("200", "503"))
    p99 = seconds[min(len(seconds) - 1, int(0.99 * len(seconds)))] if seconds else float("nan")
    rows = [
        ("requests", len(log)), ("requests/s (answered 200)", f"{len(done) / args.seconds:.2f}"),
        ("p50 / p99 request latency (ms)", f"{statistics.median(seconds) if seconds else float('nan'):.0f} / "
                                           f"{p99:.0f}"),
        ("status counts", json.dumps(statuses, sort_keys=True)),
        ("errors (not 200 or 503)", errors), ("mixed outputs", sum(r["mixed"] for r in done)),
        ("budget changes (status 200)", f"{budget_log.count(200)} of {len(budget_log)}"),
        ("resource phases (5 s each)", len(resources)),
        ("50 MB body: status, server RSS growth (MB)", f"{large[0]}, {large[1]:+.1f}"),
        ("server RSS before / after the warm-up (MB)", f"{rss[0]:.0f} / {rss[1]:.0f}"),
        ("server RSS every 5 s of the run, then at its end (MB)", f"{' '.join(resources)} {rss[2]:.0f}"),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    points = f" --points {args.points}" if args.points else ""
    return (f"## Service load test\n\nCommand: `python benchmarks/load_test.py {args.checkpoint}{points} --seconds "
            f"{args.seconds:g} --clients {args.clients}` ({time.strftime('%Y-%m-%d')}, "
            f"{machine_info()['cpu']}, {os.cpu_count()} logical cores).\n\n| measure | value |\n| --- | --- |\n"
            f"{table}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--points", type=Path, default=None, help="library (default: a ladder library built here)")
    parser.add_argument("--ladder", type=int, default=3, help="SubTransformers of the built library")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--from", dest="mirror", default=None, help="local Multi30k mirror")
    parser.add_argument("--out", type=Path, default=RESULTS / "load_test.md")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    points = args.points or build_library(args.checkpoint, args.out.with_suffix(".points.yml"), args.ladder,
                                          args.mirror)
    library = PointLibrary.load(points)
    fastest, slowest = library.efficient()[0].latency_ms, library.efficient()[-1].latency_ms
    budgets = [slowest * 1.5, fastest * 1.2, (fastest + slowest) / 2]
    _, vocab = load_trained(args.checkpoint)
    test = load_multi30k("test_2016_flickr", fetch_multi30k(None, args.mirror, progress=False)).src[:200]
    sentences = {s: len(vocab.encode(s)) for s in test}
    token = secrets.token_hex(16)
    process = subprocess.Popen([sys.executable, "-m", "dynhat", "serve", str(args.checkpoint), "--points",
                                str(points), "--budget-ms", f"{budgets[0]:.1f}", "--port", str(args.port),
                                "--threads", str(len(os.sched_getaffinity(0)))],
                               env=os.environ | {"DYNHAT_BUDGET_TOKEN": token}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    try:
        _wait_ready(args.port, process)
        server = psutil.Process(process.pid)
        rss = [server.memory_info().rss / 2**20]
        asyncio.run(_run(args.port, token, server, sentences, min(10.0, args.seconds), args.clients, budgets))
        rss.append(server.memory_info().rss / 2**20)
        large = _large_body(args.port, server)
        log, budget_log, resources = asyncio.run(_run(args.port, token, server, sentences, args.seconds,
                                                      args.clients, budgets))
        rss.append(server.memory_info().rss / 2**20)
    finally:
        process.terminate()
        process.wait(30)
    report = _report(args, log, budget_log, resources, (rss[0], rss[1], rss[2]), large)
    write_result(args.out, report)
    print(report)


if __name__ == "__main__":
    main()
