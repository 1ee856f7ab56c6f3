"""The scenario experiment of docs/runtime.md: dynamic translator vs every static operating point, in one run.

    python benchmarks/scenario.py runs/main/checkpoint_best.pt runs/points.yml

Writes the run's files to runs/scenario/, its table and the targets' check to results/NAME.md and the timeline to
results/NAME_timeline.png (NAME: --name, default scenario).
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
from dynhat.inference.measure import machine_info
from dynhat.inference.points import PointLibrary
from dynhat.recipes.scenario import best_static_label, check_targets, scenario_experiment
from dynhat.runtime.experiment import FIXED_THREADS
from dynhat.runtime.report import markdown_table, plot_timeline, write_experiment
from dynhat.runtime.scenario import Scenario, default_scenario_path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("points")
    parser.add_argument("--scenario", default=None)
    parser.add_argument("--out-dir", default=str(REPO / "runs" / "scenario"))
    parser.add_argument("--name", default="scenario", help="results/NAME.md and results/NAME_timeline.png")
    args = parser.parse_args()
    scenario = Scenario.from_yaml(args.scenario or default_scenario_path())
    model, vocab = load_trained(args.checkpoint)
    library = PointLibrary.load(args.points, checkpoint=args.checkpoint, space=model.space)
    root = shared_data_dir() / "multi30k"
    test, valid = load_multi30k("test_2016_flickr", root), load_multi30k("val", root)
    translator, experiment = scenario_experiment(model, vocab, library, scenario, test, valid, calibrate_runs=20)
    write_experiment(experiment, args.out_dir)
    png = f"{args.name}_timeline.png"
    plot_timeline(experiment.runs, RESULTS / png)
    best_label = best_static_label(translator)
    checks = check_targets(experiment, translator)
    info = machine_info()
    extra = [f"--scenario {args.scenario}"] if args.scenario else []
    if args.name != "scenario":
        extra.append(f"--name {args.name}")
    command = " ".join(["python benchmarks/scenario.py", args.checkpoint, args.points, *extra])
    lines = [f"## Scenario: {args.scenario or 'the shipped scenario'}", "", f"Command: `{command}` "
             f"({datetime.date.today()}, {info['cpu']}, {info['logical_cores']} logical cores, torch {info['torch']}); "
             f"scenario `{args.scenario or 'src/dynhat/configs/scenario.yml'}`, {len(translator.points)} operating "
             f"points, {sum(p.sentences for p in scenario.phases)} test_2016_flickr sentences per run; each point "
             "decodes at its own beam (4, or 1 for an id ending `-b1`).", "",
             "| target | measured | met |", "| --- | --- | --- |"]
    lines += [f"| {name} | {value} | {'yes' if ok else 'no'} |" for name, value, ok in checks]
    lines += ["", "Per phase: dynamic; dynamic with the phases' thread counts (points switch, threads do not); "
              "the static point of best quality. Then every run overall ('adapt' = "
              "sentences over budget at the start of a phase before the first one within it):", "",
              markdown_table([r for r in experiment.table() if r["run"] in ("dynamic", FIXED_THREADS, best_label)
                              and r["phase"] != "overall"]), "",
              markdown_table([r for r in experiment.table() if r["phase"] == "overall"]), "",
              f"![timeline]({png})", ""]
    write_result(RESULTS / f"{args.name}.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
