"""``dynhat latency collect|fit|predict``: latency datasets on this machine, and predictors fitted on them or on
HAT's published tables."""

from __future__ import annotations

import argparse
import dataclasses

from dynhat.cli.args import integer, real
from dynhat.latency.settings import CollectSettings


def register(sub: argparse._SubParsersAction) -> None:
    latency = sub.add_parser("latency", help="latency datasets and predictors").add_subparsers(
        dest="action", required=True)
    collect = latency.add_parser("collect", help="measure sampled SubTransformers on this machine into a CSV "
                                                 "(drift-probed, resumable)")
    collect.add_argument("--out", required=True, help="collection CSV (appended to and resumed if it exists)")
    defaults = CollectSettings()
    for name, kind, text in (("space", str, "design space name or YAML"),
                             ("configs", int, "how many SubTransformers to sample"),
                             ("seed", int, "which SubTransformers"),
                             ("order-seed", int, "reshuffle the measurement order with this seed"),
                             ("runs", int, "timed runs per measurement (10%% fastest and slowest dropped)"),
                             ("warmup", int, "untimed runs first"), ("threads", int, "torch intra-op threads"),
                             ("src-len", int, "source tokens"), ("tgt-len", int, "decoder steps"),
                             ("beam", int, "decoder batch"), ("probe-every", int, "reference probe interval"),
                             ("reference", str, "reference configuration: largest, smallest, middle or a YAML"),
                             ("vocab-size", int, "output vocabulary"),
                             ("max-spread", float, "re-measure a row whose kept runs vary more (std / mean)"),
                             ("retries", int, "re-measurements of a disturbed row")):
        default = getattr(defaults, name.replace("-", "_"))
        collect.add_argument(f"--{name}", type=kind, default=default, help=f"{text} (default {default})")
    collect.add_argument("--paired", action="store_true",
                         help="time every run right after one of the reference and correct each row by its own "
                              "reference runs (2x the time; for machines whose speed moves within seconds)")
    collect.add_argument("--cpu", type=integer(0), nargs="+", default=None, help="pin to these CPUs")
    collect.add_argument("--hat-csv", default=None, help="also write the drift-corrected rows in HAT's layout")
    collect.set_defaults(func=_collect)

    fit = latency.add_parser("fit", help="fit a predictor on latency CSVs; print held-out test metrics")
    fit.add_argument("csv", nargs="+", help="dynhat collections (with their .json sidecar; several are pooled if "
                                             "measured alike) or one table in HAT's layout")
    fit.add_argument("--features", choices=("layer", "hat"), default="hat",
                     help="for dynhat collections: HAT's 10 (default; the lower error on 150-row collections, "
                          "docs/latency.md) or per-layer features (for larger collections)")
    fit.add_argument("--raw", action="store_true", help="for dynhat collections: no drift correction")
    fit.add_argument("--out", required=True, help="where to write the predictor (.pt)")
    fit.add_argument("--method", choices=("hat", "ours"), default="ours",
                     help="hat: HAT's MLP; ours: dynhat's ensemble with uncertainty (default)")
    fit.add_argument("--seed", type=integer(0), default=0, help="seed of the 80/10/10 split and of the fit (default 0)")
    fit.add_argument("--device", default=None,
                     help="device the latencies were measured on (default: from the file name, e.g. xeon); "
                          "for --method hat it picks HAT's lat-norm (raspberrypi 5000, xeon 300, titanxp 200)")
    fit.add_argument("--steps", type=integer(1), default=None,
                     help="training steps (default: hat 5000 as HAT, ours 1500 with early stopping)")
    fit.add_argument("--huber", type=real(0, strict=True), default=None, metavar="DELTA",
                     help="ours only: Huber loss with this delta (in robust residual scales, e.g. 3), robust to "
                          "measurement outliers such as the warm-up rows of HAT's Raspberry Pi table")
    fit.add_argument("--threads", type=integer(1), default=None, help="thread count of the measurement (metadata)")
    fit.add_argument("--space", default=None, help="design space name of the table (metadata)")
    fit.set_defaults(func=_fit)

    predict = latency.add_parser("predict", help="predict the latency of a SubTransformer YAML")
    predict.add_argument("predictor", help="a predictor written by 'dynhat latency fit'")
    predict.add_argument("config", help="SubTransformer YAML in HAT's keys")
    predict.add_argument("--space", default=None,
                         help="design space, for predictors on per-layer features (default: the predictor's)")
    predict.set_defaults(func=_predict)


def _collect(args: argparse.Namespace) -> int:
    import contextlib

    from dynhat.inference.measure import pinned
    from dynhat.latency.collect import collect
    from dynhat.latency.dataset import load_collection

    names = [f.name for f in dataclasses.fields(CollectSettings)]
    settings = CollectSettings(**{n: getattr(args, n) for n in names})
    with pinned(args.cpu, settings.threads) if args.cpu else contextlib.nullcontext():
        collect(settings, args.out)
    collection = load_collection(args.out)
    drift = collection.drifts[0].summary()
    print(f"{args.out}: {len(collection.samples)} configurations, {drift['probes']} probes of the reference "
          f"({drift['reference_ms']:.2f} ms); drift {drift['min']:.3f}..{drift['max']:.3f} "
          f"(spread {drift['spread_pct']:.1f} %, cv {drift['cv_pct']:.2f} %), corrected")
    if args.hat_csv:
        collection.export_hat_csv(args.hat_csv)
        print(f"wrote {args.hat_csv} (HAT layout, drift-corrected)")
    return 0


def _fit(args: argparse.Namespace) -> int:
    from dynhat.errors import DataError
    from dynhat.latency.dataset import read_latency_table
    from dynhat.latency.ensemble import EnsemblePredictor
    from dynhat.latency.hat_predictor import HatPredictor

    if args.huber is not None and args.method != "ours":
        raise DataError("--huber applies to --method ours only")
    table, metadata = read_latency_table(args.csv, args.features, corrected=not args.raw, device=args.device,
                                         threads=args.threads, space=args.space)
    device = metadata["device"]
    steps = {} if args.steps is None else {"steps": args.steps}
    if args.method == "hat":
        predictor = HatPredictor(seed=args.seed, metadata=metadata, **steps)
    else:
        predictor = EnsemblePredictor(seed=args.seed, metadata=metadata, huber_delta=args.huber, **steps)
    predictor.fit(table, split_seed=args.seed)
    predictor.save(args.out)
    split = predictor.metadata["split"]
    test = predictor.evaluate(table, args.seed)
    print(f"fitted {args.method} predictor on {table.source} ({len(table)} rows; device {device}; split seed "
          f"{args.seed}: {split['train']} train / {split['valid']} valid / {split['test']} test)")
    print(f"test: RMSE {test.rmse_ms:.2f} ms  MAPE {test.mape_pct:.2f} %  max abs error {test.max_abs_ms:.2f} ms")
    print(f"wrote {args.out}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from dynhat.latency.ensemble import EnsemblePredictor
    from dynhat.latency.predictor import load_predictor
    from dynhat.space import SubTransformerConfig, load_space

    predictor = load_predictor(args.predictor)
    config = SubTransformerConfig.from_yaml(args.config)
    space = load_space(args.space) if args.space else None
    device = predictor.metadata.get("device", "unknown")
    if isinstance(predictor, EnsemblePredictor):
        mean, std = predictor.predict_config_with_std(config, space, source=args.config)
        print(f"{mean:.2f} ms  (device {device}; ensemble std {std:.2f} ms, "
              f"validation RMSE {predictor.noise_ms:.2f} ms)")
    else:
        mean = predictor.predict_config(config, space, source=args.config)
        print(f"{mean:.2f} ms  (device {device}; {predictor.method} predictor, no uncertainty)")
    return 0
