"""``dynhat run``: the whole pipeline on the embedded default (Multi30k, CPU-scale space), resumable.

See ``dynhat.pipeline``: fetch, train (time budget), latency dataset, predictor, operating-point search, scenario,
summary.
"""

from __future__ import annotations

import argparse

from dynhat.cli.args import integer, real
from dynhat.pipeline import PipelineSettings


def register(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="run the whole pipeline on the embedded default (Multi30k)")
    defaults = PipelineSettings()
    run.add_argument("--run-dir", default=defaults.run_dir, help="where everything goes (resumed if present)")
    run.add_argument("--minutes", type=real(0, strict=True), default=defaults.train_minutes,
                     help=f"SuperTransformer training budget in minutes (default {defaults.train_minutes:g}); a run "
                          "directory already trained longer is reused as it is")
    run.add_argument("--checkpoint", default=None, help="use this trained SuperTransformer instead of training one")
    run.add_argument("--latency-configs", type=integer(2), default=defaults.latency_configs)
    run.add_argument("--constraints", type=integer(1), default=defaults.constraints, help="number of operating points")
    run.add_argument("--population", type=integer(2), default=defaults.population, help="NSGA-II population")
    run.add_argument("--generations", type=integer(1), default=defaults.generations, help="NSGA-II generations")
    run.add_argument("--valid-sentences", type=integer(1), default=defaults.valid_sentences,
                     help="validation subset of the search's fitness")
    run.add_argument("--scenario", default=None, help="phases YAML (default: the shipped scenario)")
    run.add_argument("--cache-dir", default=None, help="dataset cache")
    run.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from dynhat.pipeline import run_pipeline

    run_pipeline(PipelineSettings(run_dir=args.run_dir, train_minutes=args.minutes, checkpoint=args.checkpoint,
                                  latency_configs=args.latency_configs, constraints=args.constraints,
                                  population=args.population, generations=args.generations,
                                  valid_sentences=args.valid_sentences,
                                  scenario=args.scenario, cache_dir=args.cache_dir))
    return 0
