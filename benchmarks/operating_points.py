"""Operating points of this machine (the paper's Table II and Fig. 3): search, verify, tabulate, plot.

Runs `search_operating_points` (NSGA-II front, then one point per constraint, each measured on the device and
scored on the test set), writes the library, results/operating_points.md and results/operating_points.png: test BLEU
against measured latency for the points, beside the searched front (validation loss against predicted latency).

    python benchmarks/operating_points.py runs/main/checkpoint_best.pt runs/latency/predictor.pt --cpu 1
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from results_file import RESULTS, write_result

from dynhat.data.fetch import load_multi30k, shared_data_dir
from dynhat.inference.checkpoint import load_trained
from dynhat.inference.measure import machine_info, pinned
from dynhat.io import atomic_write
from dynhat.latency.predictor import LatencyPredictor
from dynhat.recipes.points import with_bleu_set
from dynhat.search.decoding import rescore_bleu
from dynhat.search.evolution import EvolutionSettings
from dynhat.search.operating_points import SearchSettings, constraints_between, search_operating_points

REPO = Path(__file__).resolve().parents[1]
OUT = RESULTS / "operating_points.md"
HEADING = "## Operating points"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("predictor")
    parser.add_argument("--points", type=int, default=6)
    parser.add_argument("--population", type=int, default=60)
    parser.add_argument("--generations", type=int, default=15)
    parser.add_argument("--valid-sentences", type=int, default=200)
    parser.add_argument("--out", default=str(REPO / "runs" / "points.yml"))
    parser.add_argument("--cpu", type=int, default=None)
    args = parser.parse_args()
    with pinned(None if args.cpu is None else [args.cpu], 1):
        _run(args)


def _run(args: argparse.Namespace) -> None:
    """The benchmark, on ``--cpu`` (when given) with one intra-op thread."""
    model, vocab = load_trained(args.checkpoint)
    predictor = LatencyPredictor.load(args.predictor)
    n = args.points
    constraints = constraints_between(predictor, model.space, n)
    evolution = EvolutionSettings.for_population(args.population, iterations=args.generations)
    root = shared_data_dir() / "multi30k"
    settings = SearchSettings(constraints, "pareto", args.valid_sentences, evolution=evolution, verify_runs=100)
    report = search_operating_points(model, vocab, args.checkpoint, predictor, load_multi30k("val", root), settings)
    report.library.save(args.out)
    test = load_multi30k("test_2016_flickr", root)
    points = rescore_bleu(with_bleu_set(report.library, None, "test_2016_flickr"), model, vocab, test).sorted()
    lines = [HEADING, "", f"Command: `python benchmarks/operating_points.py {args.checkpoint} {args.predictor} "
             f"--points {n} --population {args.population} --generations {args.generations} --valid-sentences "
             f"{args.valid_sentences}{'' if args.cpu is None else f' --cpu {args.cpu}'}` ({datetime.date.today()}, "
             f"{machine_info()['cpu']}, 1 thread; {report.seconds / 60:.1f} min, {report.evaluations} loss "
             f"evaluations). Library: `{args.out}`.", "",
             "Latency: 30-token source, 30 decoder steps at beam 4, 100 runs, trimmed mean. Validation loss on a "
             f"{args.valid_sentences}-sentence subset of val (bits per token); sacreBLEU on test_2016_flickr (1,000 "
             "sentences, beam 4).", "",
             "| constraint (ms) | predicted (ms) | measured (ms) | valid loss | BLEU | decoder layers | params | id |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for p in points:
        lines.append(f"| {p.constraint_ms:g} | {p.predicted_ms:.1f} | {p.measured_ms:.1f} | {p.valid_loss:.3f} | "
                     f"{p.bleu:.2f} | {p.config.decoder_layer_num} | {p.params / 1e6:.2f} M | `{p.id}` |")
    for o in report.overshoots:
        lines.append(f"\nOver its constraint: `{o['id']}` at {o['constraint_ms']:g} ms measured "
                     f"{o['measured_ms']:.1f} ms (predicted {o['predicted_ms']:.1f}); searched again with margin "
                     f"{o['margin']:.2f}.")
    lines += ["", "![BLEU against measured latency](operating_points.png)", ""]
    write_result(OUT, "\n".join(lines))
    plot(report.front, points, RESULTS / "operating_points.png")
    print("\n".join(lines))


def plot(front, points, path: Path) -> None:  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    ax1.plot([p.measured_ms for p in points], [p.bleu for p in points], "o-", color="C0")
    for p in points:
        ax1.annotate(f"L{p.config.decoder_layer_num}", (p.measured_ms, p.bleu), textcoords="offset points",
                     xytext=(4, -10), fontsize=8)
    ax1.set_xlabel("measured latency (ms)")
    ax1.set_ylabel("sacreBLEU, test_2016_flickr")
    ax1.set_title("operating points")
    ax2.plot([f.latency_ms for f in front], [f.loss for f in front], ".-", color="C1", label="NSGA-II front")
    ax2.plot([p.predicted_ms for p in points], [p.valid_loss for p in points], "o", color="C0",
             label="operating points")
    ax2.set_xlabel("predicted latency (ms)")
    ax2.set_ylabel("validation loss (bits/token)")
    ax2.set_title("searched front")
    ax2.legend()
    fig.tight_layout()
    atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=110))
    plt.close(fig)


if __name__ == "__main__":
    main()
