"""Design-space reduction, measured (step 5 of the method): original against reduced SuperTransformer, point by point.

Both SuperTransformers were trained with the same budget (updates, tokens per update, schedule); the reduced one on
the space that `dynhat reduce` wrote from the original's operating points. Each is searched here for the same latency
constraints with the same search settings and the same latency predictor, every point is measured on the device and
scored on the test set, and the two are compared at each constraint. Writes results/reduced_space.md.

    python benchmarks/reduced_space.py runs/full/checkpoint_best.pt runs/reduced/checkpoint_best.pt \\
        runs/main/latency_predictor.pt --family runs/main/operating_points.yml --cpu 1
"""

from __future__ import annotations

import argparse
import csv
import datetime
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from results_file import RESULTS, write_result

from dynhat.data.fetch import load_multi30k, shared_data_dir
from dynhat.inference.checkpoint import load_checkpoint, load_trained
from dynhat.inference.measure import machine_info, pinned
from dynhat.inference.points import PointLibrary
from dynhat.latency.predictor import LatencyPredictor
from dynhat.recipes.points import with_bleu_set
from dynhat.search.decoding import rescore_bleu
from dynhat.search.evolution import EvolutionSettings
from dynhat.search.operating_points import SearchReport, SearchSettings, predictor_latency, search_operating_points
from dynhat.search.reduce import usage
from dynhat.space.sampling import largest, smallest

REPO = Path(__file__).resolve().parents[1]
OUT = RESULTS / "reduced_space.md"
HEADING = "## Design-space reduction"


def _budget(checkpoint: str) -> str:
    """Budget and the last validation of the run (its log.csv): comparable across runs, unlike 'best valid',
    which a run forked onto a reduced space judges afresh from the fork."""
    payload = load_checkpoint(checkpoint)
    state, settings = payload["state"], payload["settings"]
    with (Path(checkpoint).parent / "log.csv").open(encoding="utf-8") as f:
        validated = [row for row in csv.DictReader(f) if row["valid_loss_largest"]]
    last = validated[-1]
    return (f"{state['update']} updates of ≤ {settings['max_tokens']} tokens, {state['elapsed_s'] / 60:.0f} min; "
            f"valid loss at update {last['update']}: largest {float(last['valid_loss_largest']):.3f}, smallest "
            f"{float(last['valid_loss_smallest']):.3f} bits")


def _search(checkpoint: str, predictor: LatencyPredictor, constraints: tuple[float, ...], settings: SearchSettings,
            out: Path) -> tuple[SearchReport, PointLibrary]:
    """The search on ``checkpoint`` (its library written to ``out``) and that library's points scored on all of
    test_2016_flickr."""
    model, vocab = load_trained(checkpoint)
    root = shared_data_dir() / "multi30k"
    report = search_operating_points(model, vocab, checkpoint, predictor, load_multi30k("val", root), settings)
    report.library.save(out)
    test = load_multi30k("test_2016_flickr", root)
    return report, rescore_bleu(with_bleu_set(report.library, None, "test_2016_flickr"), model, vocab, test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("full", help="SuperTransformer checkpoint trained on the original space")
    parser.add_argument("reduced", help="SuperTransformer checkpoint trained on the reduced space")
    parser.add_argument("predictor", help="latency predictor of this machine")
    parser.add_argument("--family", nargs="+", required=True, help="the operating-point libraries the reduced "
                                                                   "space was derived from")
    parser.add_argument("--points", type=int, default=5)
    parser.add_argument("--population", type=int, default=40)
    parser.add_argument("--generations", type=int, default=10)
    parser.add_argument("--valid-sentences", type=int, default=100)
    parser.add_argument("--verify-runs", type=int, default=50)
    parser.add_argument("--out-dir", default=str(REPO / "runs" / "reduction"))
    parser.add_argument("--cpu", type=int, default=None)
    args = parser.parse_args()
    with pinned(None if args.cpu is None else [args.cpu], 1):
        _run(args)


def _run(args: argparse.Namespace) -> None:
    """The benchmark, on ``--cpu`` (when given) with one intra-op thread."""
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)

    predictor = LatencyPredictor.load(args.predictor)
    latency = predictor_latency(predictor)
    full_space = load_trained(args.full)[0].space
    reduced_space = load_trained(args.reduced)[0].space
    # the constraints span what both spaces can reach, so that every point exists in both
    lo = max(latency(smallest(full_space)), latency(smallest(reduced_space))) * 1.05
    hi = min(latency(largest(full_space)), latency(largest(reduced_space)))
    n = args.points
    constraints = tuple(round(lo + (hi - lo) * i / max(1, n - 1), 1) for i in range(n))
    evolution = EvolutionSettings.for_population(args.population, iterations=args.generations)
    settings = SearchSettings(constraints, "pareto", args.valid_sentences, evolution=evolution,
                              verify_runs=args.verify_runs)
    searched = {name: _search(ckpt, predictor, constraints, settings, out / f"{name}.yml")
               for name, ckpt in (("original", args.full), ("reduced", args.reduced))}

    family = [p.config for lib in map(PointLibrary.load, args.family) for p in lib.points]
    lines = [HEADING, "",
             f"Command: `python benchmarks/reduced_space.py {args.full} {args.reduced} {args.predictor} --family "
             f"{' '.join(args.family)} --points {n} --population {args.population} --generations "
             f"{args.generations} --valid-sentences {args.valid_sentences}"
             f"{'' if args.cpu is None else f' --cpu {args.cpu}'}` ({datetime.date.today()}, "
             f"{machine_info()['cpu']}, 1 thread). Libraries: `{out / 'original.yml'}`, `{out / 'reduced.yml'}`.", "",
             f"Reduced space: the choices that the {len(family)} operating points of "
             f"{', '.join(f'`{f}`' for f in args.family)} use; "
             f"{full_space.num_configurations():,} configurations -> {reduced_space.num_configurations():,}.", "",
             "| dimension | original choices | used (times) | dropped |", "| --- | --- | --- | --- |"]
    for use in usage(full_space, family):
        counts = ", ".join(f"{c}: {use.counts.get(c, 0)}" for c in use.choices)
        lines.append(f"| {use.dimension} | {list(use.choices)} | {counts} | {list(use.dropped) or ''} |")
    lines += ["", "Training budget (same settings, same number of updates):", "",
              f"- original ({full_space.name}): {_budget(args.full)}",
              f"- reduced ({reduced_space.name}): {_budget(args.reduced)}", "",
              "Both searched with NSGA-II (population "
              f"{args.population}, {args.generations} generations, {args.valid_sentences} validation sentences), the "
              f"same predictor and constraints; measured latency: {args.verify_runs} runs of the protocol; sacreBLEU "
              "on test_2016_flickr (1,000 sentences, beam 4).", "",
              "| constraint (ms) | original: measured (ms) | loss | BLEU | reduced: measured (ms) | loss | BLEU | "
              "BLEU change |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    changes = []
    reports = {name: report for name, (report, _) in searched.items()}
    pairs = zip(*(scored.sorted() for _, scored in searched.values()), strict=True)
    for a, b in pairs:
        changes.append(b.bleu - a.bleu)
        lines.append(f"| {a.constraint_ms:g} | {a.measured_ms:.1f} (L{a.config.decoder_layer_num}) | "
                     f"{a.valid_loss:.3f} | {a.bleu:.2f} | {b.measured_ms:.1f} (L{b.config.decoder_layer_num}) | "
                     f"{b.valid_loss:.3f} | {b.bleu:.2f} | {b.bleu - a.bleu:+.2f} "
                     f"({(b.bleu / a.bleu - 1) * 100:+.1f} %) |")
    lines += ["", f"Mean BLEU change {sum(changes) / len(changes):+.2f}; search "
                  f"{reports['original'].seconds / 60:.1f} min (original), {reports['reduced'].seconds / 60:.1f} min "
                  "(reduced).", ""]
    for name, report in reports.items():
        for o in report.overshoots:
            lines.append(f"Over its constraint ({name}): `{o['id']}` at {o['constraint_ms']:g} ms measured "
                         f"{o['measured_ms']:.1f} ms (predicted {o['predicted_ms']:.1f}); searched again.\n")
    write_result(OUT, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
