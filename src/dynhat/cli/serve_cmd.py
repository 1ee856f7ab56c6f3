"""``dynhat serve``: the HTTP translation service over the dynamic translator."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    serve = sub.add_parser("serve", help="HTTP translation service under a latency budget (FastAPI + uvicorn)")
    serve.add_argument("checkpoint", help="trained SuperTransformer checkpoint")
    serve.add_argument("--points", required=True, help="operating-point library (dynhat search)")
    serve.add_argument("--budget-ms", type=float, required=True, help="default latency budget per sentence")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--threads", type=int, default=1, help="most torch intra-op threads; fewer while other "
                                                             "processes take cores")
    serve.add_argument("--fixed-threads", action="store_true", help="always use --threads")
    serve.add_argument("--calibrate-runs", type=int, default=10)
    serve.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    import torch

    from dynhat.runtime.dynamic import DynamicTranslator
    from dynhat.runtime.service import serve
    from dynhat.search.points import PointLibrary
    from dynhat.translate.evaluate import load_trained

    torch.set_num_threads(args.threads)
    model, vocab = load_trained(args.checkpoint)
    library = PointLibrary.load(args.points, checkpoint=args.checkpoint, space=model.space)
    translator = DynamicTranslator(model, vocab, library, args.budget_ms, calibrate_runs=args.calibrate_runs,
                                   threads=args.threads, adapt_threads=not args.fixed_threads)
    serve(translator, args.host, args.port)
    return 0
