"""The probes' validation loss over a training run (``RUN/probes.csv``): one curve per probe, smallest to largest,
and a table every ``--every`` updates with the run's wall-clock and CPU hours at that update.

    python benchmarks/run_curves.py runs/super --every 500
"""

from __future__ import annotations

import argparse
import csv
import datetime
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

sys.path.insert(0, str(Path(__file__).parent))
from results_file import RESULTS, write_result


def read_probes(run_dir: Path) -> tuple[dict[int, dict[int, float]], dict[int, str], dict[int, tuple[float, float]]]:
    """(update -> {probe: loss}, probe -> SubTransformer id, update -> (wall s, CPU s))."""
    losses: dict[int, dict[int, float]] = {}
    names: dict[int, str] = {}
    times: dict[int, tuple[float, float]] = {}
    path = run_dir / "probes.csv"
    if not path.is_file():
        raise SystemExit(f"{path}: no probes.csv (a run with probes > 0 writes it at every validation)")
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            update, probe = int(row["update"]), int(row["probe"])
            losses.setdefault(update, {})[probe] = float(row["valid_loss"])
            names[probe] = row["config"]
            times[update] = (float(row["elapsed_s"]), float(row["cpu_s"]))
    return losses, names, times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--every", type=int, default=500, help="updates between table rows (the last always shown)")
    parser.add_argument("--name", default=None, help="results/NAME.md and NAME.png (default: run_curves_RUN)")
    args = parser.parse_args()
    losses, names, times = read_probes(args.run_dir)
    updates = sorted(losses)
    probes = sorted(names)
    name = args.name or f"run_curves_{args.run_dir.name}"

    fig, ax = plt.subplots(figsize=(7, 4))
    for p in probes:
        xs = [u for u in updates if p in losses[u]]
        ax.plot(xs, [losses[u][p] for u in xs], label=f"{p}: {names[p]}")
    ax.set_xlabel("update")
    ax.set_ylabel("validation loss (bits/token)")
    ax.set_title(f"{args.run_dir}: probes, smallest (0) to largest ({probes[-1]})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    picture = RESULTS / f"{name}.png"
    picture.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(picture, dpi=110)
    plt.close(fig)

    shown = [u for u in updates if u % args.every == 0 or u == updates[-1]]
    lines = [f"## Probe curves of `{args.run_dir}`", "",
             f"`python benchmarks/run_curves.py {args.run_dir} --every {args.every}` ({datetime.date.today()}); "
             f"picture `{picture.name}`. Validation loss of each probe (bits per token) on all of val.", "",
             "| update | wall h | CPU h a process | " + " | ".join(f"{p}: `{names[p]}`" for p in probes) + " |",
             "|" + " --- |" * (3 + len(probes))]
    for u in shown:
        wall, cpu = times[u]
        cells = [f"{losses[u][p]:.3f}" if p in losses[u] else "" for p in probes]
        lines.append(f"| {u} | {wall / 3600:.2f} | {cpu / 3600:.2f} | " + " | ".join(cells) + " |")
    write_result(RESULTS / f"{name}.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
