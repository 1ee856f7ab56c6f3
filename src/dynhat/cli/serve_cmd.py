"""``dynhat serve``: the HTTP translation service over the dynamic translator."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from dynhat.cli.args import integer, real

if TYPE_CHECKING:
    from dynhat.runtime.dynamic import DynamicTranslator

#: When set, ``PUT /budget`` needs ``Authorization: Bearer <its value>`` (an environment variable, so the token
#: does not show in the process list).
TOKEN_VARIABLE = "DYNHAT_BUDGET_TOKEN"


def register(sub: argparse._SubParsersAction) -> None:
    serve = sub.add_parser("serve", help="HTTP translation service under a latency budget (FastAPI + uvicorn)")
    serve.add_argument("checkpoint", help="trained SuperTransformer: checkpoint, release folder or shipped name")
    serve.add_argument("--points", required=True, help="operating-point library (dynhat search)")
    serve.add_argument("--budget-ms", type=real(0, strict=True), required=True,
                       help="default latency budget per sentence")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=integer(0, 65535), default=8080)
    serve.add_argument("--threads", type=integer(1), default=1, help="most torch intra-op threads; fewer while other "
                                                             "processes take cores")
    serve.add_argument("--fixed-threads", action="store_true", help="always use --threads")
    serve.add_argument("--precision", choices=("fp32", "int8"), default="fp32",
                       help="int8: each point's large matrices quantized once at start-up (docs/model.md)")
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
    from dynhat.inference.measure import pinned
    from dynhat.runtime.service import ServiceLimits, serve

    try:
        limits = ServiceLimits(max_body_bytes=args.max_body_kb * 1024, max_inflight=args.max_inflight,
                               request_seconds=args.request_seconds,
                               budget_token=os.environ.get(TOKEN_VARIABLE) or None)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if not 0 < args.budget_ms <= 60_000 or args.threads < 1:
        raise ConfigError("--budget-ms must be in (0, 60000] and --threads >= 1")
    with pinned(None, args.threads):
        serve(_translator(args), args.host, args.port, limits)
    return 0


def _translator(args: argparse.Namespace) -> DynamicTranslator:
    """The checkpoint's translator over the library's points (``--precision``), with the saved cost model
    (``--costs``, measured at that precision) or one calibrated now (seconds per point and thread count; saved to
    ``--save-costs`` when given)."""
    from dynhat.inference.checkpoint import load_trained
    from dynhat.inference.points import PointLibrary
    from dynhat.runtime.backends import DynhatBackend
    from dynhat.runtime.costs import CostModel, calibrate
    from dynhat.runtime.dynamic import DynamicTranslator

    model, vocab = load_trained(args.checkpoint)
    library = PointLibrary.load(args.points, checkpoint=args.checkpoint, space=model.space)
    backend = DynhatBackend(model, vocab, library.efficient(), precision=args.precision)
    if args.costs is not None:
        costs = CostModel.load(args.costs)
        costs.check(library.efficient(), args.threads, source=args.costs)
    else:
        costs = calibrate(model, vocab, library.efficient(), args.threads, args.calibrate_runs, backend=backend)
        if args.save_costs is not None:
            costs.save(args.save_costs)
    return DynamicTranslator(model, vocab, library, args.budget_ms, costs=costs, threads=args.threads,
                             adapt_threads=not args.fixed_threads, backend=backend)
