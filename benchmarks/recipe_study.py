"""Training recipes compared at equal cost, on fixed probe SubTransformers from the fastest to the largest.

Each recipe is a training settings YAML (benchmarks/recipes/) trained with the same CPU budget
(``max-cpu-minutes``, process time of the updates: a fair cost when runs share a machine) and ``probes: 5``, so
its run directory holds ``probes.csv``: the validation loss of each probe (``dynhat.space.ladder``) over the run.
This script reads the finished runs and adds, per probe, sacreBLEU on test_2016_flickr (beam 4, length penalty
0.6) and HAT's latency protocol at one thread (30 source and target tokens, beam 4, trimmed mean), so recipes on
different spaces are compared at the speed their probes really have. It writes ``results.json``, ``table.md`` and
``curves.png`` (validation loss of each probe against CPU minutes) to ``--out-dir``.

    taskset -c 0 python -m dynhat train --config benchmarks/recipes/sandwich.yml --run-dir runs/study/sandwich
    python benchmarks/recipe_study.py runs/study/progressive runs/study/sandwich --out-dir results/recipe_study

Each run's scores are kept in its directory (``probe_scores.json``), so two processes may score half the runs
each and a last call tabulates them all without scoring again.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from tqdm import tqdm

from dynhat.data.fetch import fetch_multi30k, load_multi30k, shared_data_dir
from dynhat.inference.checkpoint import load_checkpoint, load_trained
from dynhat.inference.measure import machine_info, measure_latency, pinned
from dynhat.inference.points import file_sha256
from dynhat.io import atomic_write_text
from dynhat.recipes.evaluate import evaluate
from dynhat.space import DesignSpace, ladder
from dynhat.space.cost import count_params

REPO = Path(__file__).resolve().parents[1]


def probe_curves(run_dir: Path) -> dict[int, list[tuple[float, float]]]:
    """(CPU minutes, validation loss) per probe index, in update order."""
    curves: dict[int, list[tuple[float, float]]] = {}
    with (run_dir / "probes.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            curves.setdefault(int(row["probe"]), []).append((float(row["cpu_s"]) / 60, float(row["valid_loss"])))
    return curves


def study_run(run_dir: Path, test: Any, beam: int, latency_runs: int, threads: int) -> dict[str, Any]:
    """One recipe's probes scored. BLEU is kept in ``RUN/probe_scores.json`` for the same checkpoint and
    settings, so runs can be scored by separate processes and then tabulated together; latency is measured
    again by every call, so the tabulating call times every recipe's probes in one process, one after another."""
    path = run_dir / "checkpoint_last.pt"
    key = {"checkpoint_sha256": file_sha256(path), "beam": beam, "test_sentences": len(test.src)}
    cache = run_dir / "probe_scores.json"
    if cache.exists() and all((kept := json.loads(cache.read_text()))["key"].get(k) == v for k, v in key.items()):
        result = kept["result"]
    else:
        result = score_run(run_dir, path, test, beam, threads)
        atomic_write_text(cache, json.dumps({"key": key, "result": result}, indent=1))
    model, _ = load_trained(path)
    for row, probe in zip(result["probes"], ladder(model.space, len(result["probes"])), strict=True):
        with pinned(None, 1):
            row["latency_ms"] = measure_latency(model, probe, runs=latency_runs, warmup=5, beam=beam).total_ms
    return result


def score_run(run_dir: Path, path: Path, test: Any, beam: int, threads: int) -> dict[str, Any]:
    payload = load_checkpoint(path)
    settings, state = payload["settings"], payload["state"]
    space = DesignSpace.from_dict(payload["space"])
    model, vocab = load_trained(path)
    probes = ladder(space, settings["probes"])
    curves = probe_curves(run_dir)
    rows = []
    for i, probe in enumerate(tqdm(probes, desc=run_dir.name, leave=False)):
        with pinned(None, threads):
            result = evaluate(model, vocab, probe, test, beam=beam)
        rows.append({"probe": i, "config": probe.id, "params": count_params(probe, space, len(vocab)).non_embedding,
                     "valid_loss": curves[i][-1][1], "bleu": result.bleu.sacrebleu,
                     "bleu_multi30k": result.bleu.multi30k})
    return {"recipe": run_dir.name, "space": space.name, "updates": state["update"],
            "cpu_minutes": state.get("cpu_s", 0.0) / 60, "wall_minutes": state["elapsed_s"] / 60,
            "settings": settings, "probes": rows, "curves": {str(k): v for k, v in curves.items()}}


def table(results: list[dict[str, Any]]) -> str:
    n = max(len(r["probes"]) for r in results)
    head = "| recipe | space | updates | CPU min | " + " | ".join(f"probe {i}" for i in range(n)) + " |"
    lines = [head, "|" + " --- |" * (4 + n)]
    for r in results:
        cells = [f"{p['bleu']:.1f} / {p['valid_loss']:.2f} / {p['latency_ms']:.0f} ms" for p in r["probes"]]
        lines.append(f"| {r['recipe']} | {r['space']} | {r['updates']} | {r['cpu_minutes']:.1f} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\nCells: sacreBLEU on test_2016_flickr / validation loss (bits per token) / " \
        "latency (HAT protocol, one thread).\n"


def plot(results: list[dict[str, Any]], path: Path) -> None:
    n = max(len(r["probes"]) for r in results)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.2), sharey=True)
    for i, ax in enumerate(axes):
        for r in results:
            points = r["curves"].get(str(i), [])
            ax.plot([p[0] for p in points], [p[1] for p in points], label=r["recipe"])
        ax.set_title(f"probe {i}" + (" (smallest)" if i == 0 else " (largest)" if i == n - 1 else ""))
        ax.set_xlabel("CPU minutes")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("validation loss (bits/token)")
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="finished run directories, one per recipe")
    parser.add_argument("--out-dir", type=Path, default=REPO / "results" / "recipe_study")
    parser.add_argument("--beam", type=int, default=4)
    parser.add_argument("--latency-runs", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2, help="threads for translating the test set")
    parser.add_argument("--test-sentences", type=int, default=None, help="first N of test_2016_flickr")
    args = parser.parse_args()
    mirror = shared_data_dir() / "multi30k"
    test = load_multi30k("test_2016_flickr", fetch_multi30k(None, mirror if mirror.is_dir() else None,
                                                            progress=False))
    if args.test_sentences:
        test = replace(test, src=test.src[: args.test_sentences], tgt=test.tgt[: args.test_sentences])
    torch.manual_seed(0)
    results = [study_run(run, test, args.beam, args.latency_runs, args.threads) for run in args.runs]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    meta = {"date": datetime.date.today().isoformat(), "commit": commit, "machine": machine_info(),
            "test_sentences": len(test.src), "beam": args.beam}
    atomic_write_text(args.out_dir / "results.json", json.dumps({**meta, "recipes": results}, indent=1))
    atomic_write_text(args.out_dir / "table.md", table(results))
    plot(results, args.out_dir / "curves.png")
    print(table(results))


if __name__ == "__main__":
    main()
