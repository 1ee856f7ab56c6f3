"""``dynhat serve``: the HTTP translation service over the dynamic translator."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING

from dynhat.cli.args import integer, real

if TYPE_CHECKING:
    from dynhat.runtime.costs import CostModel
    from dynhat.runtime.dynamic import DynamicTranslator

#: When set, ``PUT /budget`` needs ``Authorization: Bearer <its value>`` (an environment variable, so the token
#: does not show in the process list).
TOKEN_VARIABLE = "DYNHAT_BUDGET_TOKEN"


def register(sub: argparse._SubParsersAction) -> None:
    serve = sub.add_parser("serve", help="HTTP translation service under a latency budget (FastAPI + uvicorn)")
    serve.add_argument("checkpoint", help="trained SuperTransformer (checkpoint, release folder or shipped name), or "
                                          "an engine folder (dynhat export --engine: served without torch)")
    serve.add_argument("--points", default=None, help="operating-point library (dynhat search); default: the one a "
                                                      "release holds (points.yml); an engine folder has its own")
    serve.add_argument("--budget-ms", type=real(0, strict=True), required=True,
                       help="default latency budget per sentence")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=integer(0, 65535), default=8080)
    serve.add_argument("--threads", type=integer(1), default=1,
                       help="most intra-op threads; fewer while other processes take cores (an engine folder loads "
                            "each model once per count up to this)")
    serve.add_argument("--fixed-threads", action="store_true", help="always use --threads")
    serve.add_argument("--precision", choices=("fp32", "int8"), default=None,
                       help="default fp32; int8: each point's large matrices quantized once at start-up "
                            "(docs/model.md); of an engine folder: the type its engines compute in (default: as "
                            "exported)")
    serve.add_argument("--calibrate-runs", type=integer(1), default=10)
    costs = serve.add_mutually_exclusive_group()
    costs.add_argument("--costs", default=None, metavar="FILE",
                       help="start from this saved cost model instead of calibrating (points and threads must match)")
    costs.add_argument("--save-costs", default=None, metavar="FILE",
                       help="save the calibrated cost model here, for a later --costs")
    serve.add_argument("--max-inflight", type=integer(1), default=4,
                       help="requests translating at once; more get 503 + Retry-After instead of queueing")
    serve.add_argument("--max-body-kb", type=integer(1), default=256, help="larger request bodies get 413 unread")
    serve.add_argument("--request-seconds", type=real(0, strict=True), default=60.0,
                       help="a request still running after this stops between sentences (503)")
    serve.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    import os

    from dynhat.errors import ConfigError
    from dynhat.runtime.service import ServiceLimits, serve

    try:
        limits = ServiceLimits(max_body_bytes=args.max_body_kb * 1024, max_inflight=args.max_inflight,
                               request_seconds=args.request_seconds,
                               budget_token=os.environ.get(TOKEN_VARIABLE) or None)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if not 0 < args.budget_ms <= 60_000 or args.threads < 1:
        raise ConfigError("--budget-ms must be in (0, 60000] and --threads >= 1")
    from dynhat.inference.engine import is_engine

    if is_engine(args.checkpoint):  # no torch in this process
        serve(_announced(_engine_translator(args), f"{args.checkpoint}/points.yml"), args.host, args.port, limits)
        return 0
    from dynhat.inference.measure import pinned
    from dynhat.inference.release import library_path

    args.points = library_path(args.checkpoint, args.points)  # before the model loads: a missing library fails fast

    with pinned(None, args.threads):
        serve(_announced(_translator(args), str(args.points)), args.host, args.port, limits)
    return 0


def _announced(translator: DynamicTranslator, library: str) -> DynamicTranslator:
    """Say which points the service switches between (fastest first) before it starts listening."""
    import sys

    points = ", ".join(f"{p.id} ({p.latency_ms:.0f} ms where searched)" for p in translator.points)
    print(f"dynhat serve: {len(translator.points)} points of {library}: {points}", file=sys.stderr, flush=True)
    return translator


def _costs(args: argparse.Namespace, points: list, calibrate: Callable[[], CostModel]) -> CostModel:
    """The saved cost model (``--costs``, checked against the points and threads) or one calibrated now (saved to
    ``--save-costs`` when given)."""
    from dynhat.runtime.costs import CostModel

    if args.costs is not None:
        costs = CostModel.load(args.costs)
        costs.check(points, args.threads, source=args.costs)
        return costs
    costs = calibrate()
    if args.save_costs is not None:
        costs.save(args.save_costs)
    return costs


def _engine_translator(args: argparse.Namespace) -> DynamicTranslator:
    """An engine folder's points loaded through CTranslate2 once per thread count up to ``--threads`` (it fixes a
    model's threads when it loads it), with the saved or a freshly calibrated cost model."""
    from dynhat.errors import ConfigError
    from dynhat.inference.engine import load_engine
    from dynhat.runtime.costs import calibrate
    from dynhat.runtime.dynamic import DynamicTranslator

    if args.points is not None:
        raise ConfigError(f"--points: {args.checkpoint} is an engine folder and serves its own points.yml")
    engine = load_engine(args.checkpoint)
    compute = {None: "default", "fp32": "float32", "int8": "int8"}[args.precision]
    backend = engine.backend(compute, args.threads)
    points = engine.library.efficient()
    costs = _costs(args, points, lambda: calibrate(None, engine.vocab, points, args.threads, args.calibrate_runs,
                                                   backend=backend))
    return DynamicTranslator(None, engine.vocab, engine.library, args.budget_ms, costs=costs, threads=args.threads,
                             adapt_threads=not args.fixed_threads, backend=backend)


def _translator(args: argparse.Namespace) -> DynamicTranslator:
    """The checkpoint's translator over the library's points (``--precision``), with the saved cost model
    (``--costs``, measured at that precision) or one calibrated now (seconds per point and thread count)."""
    from dynhat.inference.checkpoint import load_trained
    from dynhat.inference.points import PointLibrary
    from dynhat.runtime.backends import DynhatBackend
    from dynhat.runtime.costs import calibrate
    from dynhat.runtime.dynamic import DynamicTranslator

    model, vocab = load_trained(args.checkpoint)
    library = PointLibrary.load(args.points, checkpoint=args.checkpoint, space=model.space)
    points = library.efficient()
    backend = DynhatBackend(model, vocab, points, precision=args.precision or "fp32")
    costs = _costs(args, points, lambda: calibrate(model, vocab, points, args.threads, args.calibrate_runs,
                                                   backend=backend))
    return DynamicTranslator(model, vocab, library, args.budget_ms, costs=costs, threads=args.threads,
                             adapt_threads=not args.fixed_threads, backend=backend)
