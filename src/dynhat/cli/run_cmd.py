"""``dynhat run``: the whole pipeline on a device, resumable: by default on the shipped SuperTransformer.

See ``dynhat.pipeline``: fetch, the SuperTransformer (shipped, given, or trained with ``--train``), latency
dataset, predictor, operating-point search, scenario, summary.
"""

from __future__ import annotations

import argparse

from dynhat.cli.args import integer, real
from dynhat.pipeline.settings import DEFAULT_RELEASE, PAIRED_CHOICES, PipelineSettings


def register(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help=f"run the whole pipeline on the shipped SuperTransformer ({DEFAULT_RELEASE}), "
                                     "a given one, or one trained from scratch (--train)")
    defaults = PipelineSettings()
    run.add_argument("--run-dir", default=defaults.run_dir, help="where everything goes (resumed if present)")
    model = run.add_mutually_exclusive_group()
    model.add_argument("--checkpoint", default=None,
                       help="serve this SuperTransformer (checkpoint file, release folder or shipped name) instead of "
                            f"the shipped {DEFAULT_RELEASE}")
    model.add_argument("--train", action="store_true",
                       help="train a SuperTransformer of the CPU-scale space from scratch in the run directory "
                            "(--minutes) instead of using the shipped one")
    run.add_argument("--minutes", type=real(0, strict=True), default=defaults.train_minutes,
                     help=f"with --train: training budget in minutes (default {defaults.train_minutes:g}); a run "
                          "directory already trained longer is reused as it is")
    run.add_argument("--latency-configs", type=integer(2), default=defaults.latency_configs)
    run.add_argument("--latency-runs", type=integer(1), default=defaults.latency_runs,
                     help="timed runs per SubTransformer of the latency dataset")
    run.add_argument("--paired", choices=PAIRED_CHOICES, default=defaults.paired,
                     help="paired latency collection: auto (when reference probes show the machine's speed moving), "
                          "on, off")
    run.add_argument("--constraints", type=integer(1), default=defaults.constraints, help="number of operating points")
    run.add_argument("--population", type=integer(2), default=defaults.population, help="NSGA-II population")
    run.add_argument("--generations", type=integer(1), default=defaults.generations, help="NSGA-II generations")
    run.add_argument("--valid-sentences", type=integer(1), default=defaults.valid_sentences,
                     help="validation subset of the search's fitness")
    run.add_argument("--bleu-sentences", type=integer(0), default=0,
                     help="every point's BLEU, what ranks the served points, on the first N validation sentences "
                          "(0: all 1,014)")
    run.add_argument("--scenario", default=None, help="phases YAML (default: the shipped scenario)")
    run.add_argument("--cache-dir", default=None, help="dataset cache")
    run.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from dynhat.pipeline import run_pipeline

    run_pipeline(PipelineSettings(run_dir=args.run_dir, checkpoint=args.checkpoint, train=args.train,
                                  train_minutes=args.minutes, latency_configs=args.latency_configs,
                                  latency_runs=args.latency_runs, paired=args.paired, constraints=args.constraints,
                                  population=args.population, generations=args.generations,
                                  valid_sentences=args.valid_sentences, bleu_sentences=args.bleu_sentences or None,
                                  scenario=args.scenario,
                                  cache_dir=args.cache_dir, command=args.invocation))
    return 0
