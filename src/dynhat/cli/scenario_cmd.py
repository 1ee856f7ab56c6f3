"""``dynhat scenario``: the dynamic translator against every static operating point while resources change."""

from __future__ import annotations

import argparse

from dynhat.cli.args import integer


def register(sub: argparse._SubParsersAction) -> None:
    scenario = sub.add_parser("scenario", help="run a stream of test sentences through phases of changing "
                                               "resources, dynamic vs static; report and plot")
    scenario.add_argument("checkpoint", help="trained SuperTransformer: checkpoint, release folder or shipped name")
    scenario.add_argument("--points", default=None, help="operating-point library (dynhat search); default: the "
                                                         "one a release holds (points.yml)")
    scenario.add_argument("--scenario", default=None, help="phases YAML (default: the shipped scenario.yml)")
    scenario.add_argument("--split", choices=("test_2016_flickr", "test_2017_flickr"), default="test_2016_flickr",
                          help="the Multi30k test split the stream is drawn from (its first sentences, in order): "
                               "test_2017_flickr for a stream no library has been scored on")
    scenario.add_argument("--out-dir", default="runs/scenario", help="report JSON, table and timeline PNG")
    scenario.add_argument("--cache-dir", default=None, help="dataset cache (see `dynhat data fetch`)")
    scenario.add_argument("--from", dest="mirror", default=None, help="local Multi30k mirror folder")
    scenario.add_argument("--no-static", action="store_true", help="only the dynamic translator")
    scenario.add_argument("--calibrate-runs", type=integer(1), default=10)
    scenario.add_argument("--save-costs", default=None, metavar="FILE",
                          help="save the cost model calibrated on validation sentences, for `dynhat serve --costs`")
    scenario.set_defaults(func=_scenario)


def _scenario(args: argparse.Namespace) -> int:
    from dynhat.data.fetch import fetch_multi30k, load_multi30k
    from dynhat.inference.checkpoint import load_trained
    from dynhat.inference.points import PointLibrary
    from dynhat.inference.release import library_path
    from dynhat.recipes.scenario import scenario_experiment
    from dynhat.runtime.report import write_experiment
    from dynhat.runtime.scenario import Scenario, default_scenario_path

    scenario = Scenario.from_yaml(args.scenario or default_scenario_path())
    points = library_path(args.checkpoint, args.points)
    model, vocab = load_trained(args.checkpoint)
    library = PointLibrary.load(points, checkpoint=args.checkpoint, space=model.space)
    root = fetch_multi30k(args.cache_dir, args.mirror, progress=False)
    _, experiment = scenario_experiment(model, vocab, library, scenario, load_multi30k(args.split, root),
                                        load_multi30k("val", root), args.calibrate_runs, static=not args.no_static,
                                        save_costs=args.save_costs)
    print(write_experiment(experiment, args.out_dir))
    return 0
