"""What a scenario experiment leaves behind: every sentence as JSON, the table as markdown, the timeline as PNG."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dynhat.io import atomic_write, atomic_write_text
from dynhat.runtime.experiment import Experiment, PhaseReport


def plot_timeline(runs: dict[str, list[PhaseReport]], path: str | Path) -> None:
    """Latency per sentence against the budget, with the active point, for the dynamic run and the static ones."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dynamic = runs["dynamic"]
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(12, 7), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    for label, reports in runs.items():
        lat = [r.latency_ms for rep in reports for r in rep.results]
        style = {"lw": 1.6, "color": "black", "zorder": 3} if label == "dynamic" else {"lw": 0.8, "alpha": 0.6}
        ax.plot(range(len(lat)), lat, label=label, **style)
    budgets = [rep.budget_ms for rep in dynamic for _ in rep.results]
    ax.plot(range(len(budgets)), budgets, "r--", lw=1.5, label="budget")
    start = 0
    for i, rep in enumerate(dynamic):
        end = start + len(rep.results)
        if i % 2:
            ax.axvspan(start, end, color="0.92", zorder=0)
            ax2.axvspan(start, end, color="0.92", zorder=0)
        ax.text((start + end) / 2, 0.98, rep.name, transform=ax.get_xaxis_transform(), ha="center", va="top",
                fontsize=9)
        start = end
    ax.set_ylabel("latency per sentence (ms)")
    ax.set_yscale("log")
    ax.legend(fontsize=7, ncol=4, loc="lower right")
    points = [r.point_index for rep in dynamic for r in rep.results]
    ax2.step(range(len(points)), points, where="post", color="black", label="point")
    ax2.set_ylabel("active point\n(0 = fastest)")
    threads = ax2.twinx()
    threads.step(range(len(points)), [r.threads for rep in dynamic for r in rep.results], where="post", color="C3",
                 ls="--", label="threads")
    threads.set_ylabel("threads", color="C3")
    ax2.set_xlabel("sentence")
    fig.tight_layout()
    atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=110))
    plt.close(fig)


SCENARIO_COLUMNS = ("run", "phase", "budget_ms", "within_pct", "mean_ms", "p95_ms", "bleu", "switches",
                    "adapt_sentences", "threads")


def markdown_table(rows: Sequence[dict[str, Any]], cols: Sequence[str] = SCENARIO_COLUMNS) -> str:
    """``rows`` as a markdown table of ``cols`` (a missing or None cell is left empty)."""
    lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    for row in rows:
        lines.append("| " + " | ".join("" if row.get(c) is None else str(row.get(c)) for c in cols) + " |")
    return "\n".join(lines)


def write_experiment(experiment: Experiment, out_dir: str | Path) -> str:
    """``report.json`` (every sentence), ``table.md`` and ``timeline.png`` in ``out_dir``; returns the table."""
    out = Path(out_dir)
    rows = experiment.table()
    detail = {label: [{"phase": rep.name, "budget_ms": rep.budget_ms, "results": [r.to_dict() for r in rep.results],
                       "switch_ms": rep.switch_ms} for rep in reports] for label, reports in experiment.runs.items()}
    atomic_write_text(out / "report.json", json.dumps({"table": rows, "runs": detail}, indent=1) + "\n")
    table = markdown_table(rows)
    atomic_write_text(out / "table.md", table + "\n")
    plot_timeline(experiment.runs, out / "timeline.png")
    return table
