"""`dynhat train` on a CUDA GPU: a run in pieces that resumes exactly, and the recipe's speed and result there.

Every check is a real ``python -m dynhat train`` process with the SuperTransformer recipe
(``benchmarks/supertransformer.yml`` as one process with ``--update-freq 2``: the updates of two CPU ranks):

1. **resume**: ``--check-updates`` updates in one call, and the same updates as a piece of ``--piece-minutes``,
   a call killed (SIGKILL) after its first save, and a call that finishes. Final weights and optimiser state,
   and the logged losses, against the straight run's: bit for bit, or the largest difference.
2. **recipe** (``--recipe-minutes``, 0 for none): the full recipe trained in pieces, started before the check and
   run beside it, until it finishes or its minutes are spent; updates a second from its log, the probes'
   validation losses, and its best checkpoint exported as a release (``--export``).

    python benchmarks/gpu_training.py --from ../shared/data/multi30k --runs runs/gpu --recipe-minutes 6 \\
        --export runs/gpu/release                                        # writes results/gpu_training.md

``--device cpu`` runs the same checks on the CPU (the recipe's autocast there: its ``auto``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from results_file import RESULTS, write_result

from dynhat.inference.checkpoint import load_checkpoint
from dynhat.inference.measure import machine_info

REPO = Path(__file__).resolve().parents[1]
OUT = RESULTS / "gpu_training.md"
TIMING = {"tokens_per_s", "updates_per_s", "elapsed_s", "cpu_s"}


def train(run_dir: Path, args: argparse.Namespace, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "dynhat", "train", "--config", str(args.config), "--run-dir", str(run_dir),
               "--update-freq", "2", "--device", args.device, *extra]
    if args.mirror:
        command += ["--from", args.mirror]
    log = open(run_dir.parent / f"{run_dir.name}.out", "a")  # noqa: SIM115 - the child process owns it
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def finish(proc: subprocess.Popen, name: str) -> None:
    if proc.wait() != 0:
        raise SystemExit(f"{name}: dynhat train exited with {proc.returncode} (see its .out file)")


def saved_update(run_dir: Path) -> int:
    path = run_dir / "checkpoint_last.pt"
    return load_checkpoint(path)["state"]["update"] if path.exists() else 0


def log_rows(run_dir: Path, name: str = "log.csv") -> list[dict[str, str]]:
    """The rows of a run's CSV log (``log.csv``, or ``probes.csv``; none where it has not written one)."""
    path = run_dir / name
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def difference(a: object, b: object) -> float:
    """Largest absolute difference between two nested structures of tensors (0.0: bit for bit)."""
    if isinstance(a, torch.Tensor):
        if torch.equal(a, b):
            return 0.0
        return float((a.double() - b.double()).abs().max()) if a.is_floating_point() else float("inf")
    if isinstance(a, dict):
        return max((difference(a[key], b[key]) for key in a), default=0.0)
    if isinstance(a, list | tuple):
        return max((difference(x, y) for x, y in zip(a, b, strict=True)), default=0.0)
    return 0.0


def resume_check(args: argparse.Namespace) -> dict[str, object]:
    straight, pieces = args.runs / "straight", args.runs / "pieces"
    for run in (straight, pieces):
        run.mkdir(parents=True, exist_ok=True)
    budget = ("--max-updates", str(args.check_updates))
    started = time.perf_counter()
    finish(train(straight, args, *budget), "straight")
    straight_s = time.perf_counter() - started
    finish(train(pieces, args, *budget, "--piece-minutes", str(args.piece_minutes)), "first piece")
    first = saved_update(pieces)
    last = pieces / "checkpoint_last.pt"
    saved = last.stat().st_mtime_ns
    proc, killed_at = train(pieces, args, *budget), None
    while proc.poll() is None:
        time.sleep(0.2)
        if last.stat().st_mtime_ns != saved:  # a save replaces the file whole (atomic rename)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            killed_at = saved_update(pieces)
    finish(train(pieces, args, *budget), "last piece")
    a, b = load_checkpoint(straight / "checkpoint_last.pt"), load_checkpoint(pieces / "checkpoint_last.pt")
    rows_a = log_rows(straight)
    losses_a, losses_b = ({row["update"]: {k: v for k, v in row.items() if k not in TIMING} for row in rows}
                          for rows in (rows_a, log_rows(pieces)))
    # a piece's end logs a row of its own: compare the rows of the straight run's updates
    losses_equal = all(losses_b.get(update) == row for update, row in losses_a.items())
    return {"updates": args.check_updates, "first_piece_saved_at": first, "killed_after_save_at": killed_at,
            "weights_max_diff": difference(a["model"], b["model"]),
            "optimizer_max_diff": difference(a["optimizer"]["state"], b["optimizer"]["state"]),
            "log_rows": len(rows_a), "logged_losses_equal": losses_equal, "straight_wall_s": round(straight_s, 1),
            "straight_updates_per_s": float(rows_a[-1]["updates_per_s"]), "precision": a["state"]["precision"]}


def recipe_summary(run_dir: Path, export: Path | None) -> dict[str, object]:
    rows = log_rows(run_dir)
    last = load_checkpoint(run_dir / "checkpoint_last.pt")["state"]
    summary: dict[str, object] = {
        "updates": last["update"], "elapsed_s": float(rows[-1]["elapsed_s"]) if rows else None,
        "updates_per_s": sorted(float(row["updates_per_s"]) for row in rows)[len(rows) // 2] if rows else None,
        "best_valid_loss": last["best_valid"], "precision": last["precision"]}
    probes = log_rows(run_dir, "probes.csv")
    if probes:
        summary["probes_at_end"] = {row["config"]: float(row["valid_loss"]) for row in probes
                                    if row["update"] == probes[-1]["update"]}
    if export is not None and (run_dir / "checkpoint_best.pt").exists():
        subprocess.run([sys.executable, "-m", "dynhat", "export", str(run_dir / "checkpoint_best.pt"),
                        "--out-dir", str(export), "--dtype", "bf16"], check=True)
        summary["exported"] = str(export)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "benchmarks" / "supertransformer.yml")
    parser.add_argument("--runs", type=Path, default=Path("runs/gpu"), help="run folders (made fresh)")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--check-updates", type=int, default=150, help="updates of the resume check")
    parser.add_argument("--piece-minutes", type=float, default=0.1, help="the resume check's first piece")
    parser.add_argument("--recipe-minutes", type=float, default=0.0, help="the full recipe's minutes (0: none)")
    parser.add_argument("--export", type=Path, default=None, help="release folder for the recipe's best checkpoint")
    parser.add_argument("--from", dest="mirror", default=None, help="local Multi30k mirror folder")
    parser.add_argument("--results", type=Path, default=OUT)
    args = parser.parse_args()
    if any(args.runs.glob("*/checkpoint_last.pt")):
        raise SystemExit(f"{args.runs}: holds runs already; give a new folder")
    args.runs.mkdir(parents=True, exist_ok=True)
    recipe = None
    if args.recipe_minutes > 0:
        (args.runs / "recipe").mkdir()
        recipe = train(args.runs / "recipe", args, "--piece-minutes", str(args.recipe_minutes))
    resume = resume_check(args)
    report: dict[str, object] = {"machine": machine_info(), "device": args.device, "resume": resume}
    if args.device == "cuda":
        report["gpu"] = torch.cuda.get_device_name(0)
    if recipe is not None:
        finish(recipe, "recipe")
        report["recipe"] = recipe_summary(args.runs / "recipe", args.export)
    command = " ".join(["python", "benchmarks/gpu_training.py", *sys.argv[1:]])
    text = (f"## dynhat train on {report.get('gpu', args.device)}\n\n`{command}` "
            f"({time.strftime('%Y-%m-%d')})\n\n```json\n{json.dumps(report, indent=1, default=str)}\n```\n")
    print(text)
    write_result(args.results, text)


if __name__ == "__main__":
    main()
