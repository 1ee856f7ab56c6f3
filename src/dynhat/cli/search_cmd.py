"""``dynhat search``: operating points of a trained SuperTransformer for latency constraints on this machine."""

from __future__ import annotations

import argparse
from typing import Any

from dynhat.cli.args import integer
from dynhat.data.fetch import SPLITS
from dynhat.errors import ConfigError


def parse_constraints(text: str) -> tuple[float, ...]:
    """``100,150,200`` (ms, an optional ``ms`` suffix each) or a range ``LOW:HIGH:COUNT`` (evenly spaced)."""
    try:
        if ":" in text:
            low, high, count = text.split(":")
            n = int(count)
            lo, hi = float(low.removesuffix("ms")), float(high.removesuffix("ms"))
            if n < 1 or hi < lo:
                raise ValueError
            return tuple(round(lo + (hi - lo) * i / max(1, n - 1), 3) for i in range(n))
        values = tuple(float(v.strip().removesuffix("ms")) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"{text!r}: expected a list like 100,150ms,200 or a range LOW:HIGH:COUNT",
                          field="--constraints") from None
    if not values or min(values) <= 0:
        raise ConfigError(f"{text!r}: constraints must be positive milliseconds", field="--constraints")
    return values


def _int_list(text: str, flag: str, low: int) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or min(values) < low:
        raise ConfigError(f"{text!r}: expected integers >= {low} separated by commas", field=flag)
    return values


def parse_beams(text: str) -> tuple[int, ...]:
    return _int_list(text, "--beams", 1)


def parse_cpus(text: str) -> tuple[int, ...]:
    return _int_list(text, "--cpus", 0)


def _data_source(parser: argparse.ArgumentParser) -> None:
    """Where a command that scores points finds Multi30k."""
    parser.add_argument("--cache-dir", default=None, help="dataset cache (see `dynhat data fetch`)")
    parser.add_argument("--from", dest="mirror", default=None, help="local Multi30k mirror folder")


def register(sub: argparse._SubParsersAction) -> None:
    search = sub.add_parser("search", help="search operating points (one per latency constraint), verify them on "
                                           "this machine and write an operating-point library")
    search.add_argument("checkpoint", help="trained SuperTransformer: checkpoint, release folder or shipped name")
    search.add_argument("--predictor", required=True, help="latency predictor of this machine (dynhat latency fit)")
    search.add_argument("--constraints", required=True, type=parse_constraints,
                        help="latency constraints in ms: 100,150,200 or LOW:HIGH:COUNT")
    search.add_argument("--out", required=True, help="operating-point library YAML to write")
    search.add_argument("--mode", choices=("evolution", "pareto"), default="evolution",
                        help="evolution: HAT's search per constraint; pareto: one NSGA-II front for all")
    _data_source(search)
    search.add_argument("--valid-sentences", type=integer(1), default=100,
                        help="validation subset for the fitness (0: all); 100 ranks SubTransformers as all 1,014 "
                             "do (Spearman 0.999, docs/search.md)")
    search.add_argument("--bleu-sentences", type=integer(0), default=0,
                        help="every point's BLEU (what the runtime ranks points by) on the first N validation "
                             "sentences (0: all 1,014); no test sentence takes part in a choice")
    search.add_argument("--precision", choices=("auto", "float32", "bfloat16"), default="auto",
                        help="of the fitness passes (auto: bfloat16 autocast where the CPU has it natively)")
    search.add_argument("--engine", choices=("ctranslate2",), default=None,
                        help="keep to the SubTransformers this engine can express (one head count per stack, "
                             "encoder-decoder attention on the last encoder layer), so the library exports with "
                             "dynhat export --engine")
    search.add_argument("--population", type=integer(2), default=125)
    search.add_argument("--parents", type=integer(1), default=None,
                        help="of the population (default: a fifth, at least 2)")
    search.add_argument("--iterations", type=integer(1), default=30)
    search.add_argument("--patience", type=integer(1), default=None, help="stop after N iterations without improvement")
    search.add_argument("--verify-runs", type=integer(1), default=50, help="timed runs of each point's on-device check")
    search.add_argument("--threads", type=integer(1), default=1)
    search.add_argument("--workers", type=integer(1), default=1,
                        help="fitness processes, one CPU each (a generation's new candidates in parallel)")
    search.add_argument("--seed", type=integer(0), default=0)
    search.add_argument("--variant-beams", type=parse_beams, default=(),
                        help="also verify every point decoded with these beams, e.g. 1 (greedy): decoding variants")
    search.set_defaults(func=_search)

    variants = sub.add_parser("variants", help="add decoding variants (each point at narrower beams, verified on "
                                               "this machine) to an operating-point library")
    variants.add_argument("checkpoint",
                          help="the library's SuperTransformer: checkpoint, release folder or shipped name")
    variants.add_argument("--points", required=True, help="operating-point library to extend")
    variants.add_argument("--beams", type=parse_beams, default=(1,), help="beams of the variants (default 1)")
    variants.add_argument("--out", required=True, help="library YAML to write (may be --points)")
    variants.add_argument("--runs", type=integer(1), default=50, help="timed runs of each variant's latency check")
    variants.add_argument("--cpus", type=parse_cpus, default=None,
                          help="CPUs of the latency check, e.g. 1 (those of the library's measurements)")
    _data_source(variants)
    variants.set_defaults(func=_variants)

    reduce = sub.add_parser("reduce", help="keep only the design-space choices a device family's operating points "
                                           "use; write the reduced space YAML")
    reduce.add_argument("libraries", nargs="+", help="operating-point libraries (one device family)")
    reduce.add_argument("--out", required=True, help="reduced space YAML to write")
    reduce.add_argument("--name", default=None, help="name of the reduced space")
    reduce.set_defaults(func=_reduce)
    _register_points(sub)


def _register_points(sub: argparse._SubParsersAction) -> None:
    actions = sub.add_parser("points", help="operating-point libraries").add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="add a point of another library (same checkpoint) to a library, verified "
                                         "on this machine as the search verifies its points")
    add.add_argument("checkpoint", help="the libraries' SuperTransformer: checkpoint, release folder or shipped name")
    add.add_argument("library", help="operating-point library to extend")
    add.add_argument("--source", required=True, help="library holding the point to add")
    add.add_argument("--id", required=True, help="id of the point in --source")
    add.add_argument("--predictor", required=True, help="the library's latency predictor (its predicted_ms)")
    add.add_argument("--runs", type=integer(1), default=300, help="protocol runs of the latency check")
    add.add_argument("--out", required=True, help="library YAML to write (may be LIBRARY)")
    _data_source(add)
    add.set_defaults(func=_points_add)
    int8 = actions.add_parser("int8", help="score every point of a library in int8 too (bleu_int8 beside bleu: "
                              "what serving with --precision int8 costs), on the library's BLEU sentences")
    int8.add_argument("checkpoint", help="the library's SuperTransformer: checkpoint, release folder or shipped name")
    int8.add_argument("library", help="operating-point library")
    int8.add_argument("--out", required=True, help="library YAML to write (may be LIBRARY)")
    _data_source(int8)
    int8.set_defaults(func=_points_int8)
    bleu = actions.add_parser("bleu", help="measure every point's BLEU again on the first N sentences of a Multi30k "
                                           "split (the runtime ranks the served points by it)")
    bleu.add_argument("checkpoint", help="the library's SuperTransformer: checkpoint, release folder or shipped name")
    bleu.add_argument("library", help="operating-point library, or a release (folder or shipped name): its points.yml")
    bleu.add_argument("--split", choices=SPLITS[1:], default=None,
                      help="Multi30k split (default val: nothing is chosen on test data)")
    bleu.add_argument("--src", default=None, help="instead of a split: a development set of your own, its source "
                                                  "file (one sentence a line, .gz too)")
    bleu.add_argument("--ref", default=None, help="the references of --src, line-aligned with it")
    bleu.add_argument("--sentences", type=integer(0), default=0, help="the first N of the split (0: all)")
    bleu.add_argument("--out", required=True, help="library YAML to write (may be LIBRARY, unless a release's)")
    _data_source(bleu)
    bleu.set_defaults(func=_points_bleu)

    show = actions.add_parser("show", help="list a library's points: latency, loss, BLEU, how the runtime serves "
                                           "each (the names --point takes)")
    show.add_argument("library", help="operating-point library, or a release (folder or shipped name): its points.yml")
    show.set_defaults(func=_points_show)

    config = actions.add_parser("config", help="write a served point's SubTransformer as a YAML (what `train "
                                               "--sampling fixed --fixed-config` reads to train it alone)")
    config.add_argument("library", help="operating-point library")
    config.add_argument("--point", default="best", help="fastest, middle, best, or a point or SubTransformer id")
    config.add_argument("--out", required=True, help="SubTransformer YAML to write")
    config.set_defaults(func=_points_config)


def _reduce(args: argparse.Namespace) -> int:
    from dynhat.inference.points import PointLibrary
    from dynhat.search.reduce import reduce_space, usage

    libraries = [PointLibrary.load(p) for p in args.libraries]
    spaces = {lib.space for lib in libraries}
    if len(spaces) > 1:
        raise ConfigError(f"the libraries come from different spaces {sorted(spaces)}; reduce one space at a time")
    space = libraries[0].design_space()
    configs = [p.config for lib in libraries for p in lib.points]
    print(f"{len(configs)} operating points of {space.name}")
    print(f"{'dimension':<40} {'choices':<22} used (times)")
    for use in usage(space, configs):
        counts = ", ".join(f"{c}: {use.counts.get(c, 0)}" for c in use.choices)
        print(f"{use.dimension:<40} {list(use.choices)!s:<22} {counts}"
              + (f"   dropped {list(use.dropped)}" if use.dropped else ""))
    reduced = reduce_space(space, configs, args.name)
    reduced.save_yaml(args.out)
    print(f"configurations: {space.num_configurations():,} -> {reduced.num_configurations():,}; wrote {args.out}")
    return 0


def print_library(library: Any) -> None:
    """One row per constraint (a point that won several shows in each), with how the runtime serves it."""
    int8 = any(p.bleu_int8 is not None for p in library.points)
    print(f"{'constraint':>10} {'predicted':>9} {'measured':>8} {'loss':>7} {'BLEU':>6} "
          + (f"{'int8':>6} " if int8 else "") + f"{'dec':>3} {'beam':>4}  {'served':<7} id")

    def cell(value: float | None, width: int, digits: int) -> str:
        return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"

    for p in library.sorted():
        quantized = cell(p.bleu_int8, 6, 2) + " " if int8 else ""
        print(f"{p.constraint_ms:>10.1f} {cell(p.predicted_ms, 9, 2)} {cell(p.measured_ms, 8, 2)} "
              f"{p.valid_loss:>7.4f} {cell(p.bleu, 6, 2)} {quantized}{p.config.decoder_layer_num:>3} {p.beam:>4}  "
              f"{library.served_as(p):<7} {p.id}")


def _multi30k_for(args: argparse.Namespace, library: Any) -> Any:
    """The Multi30k folder a library's BLEU sentences come from; None for a development set of the user's."""
    from dynhat.data.fetch import fetch_multi30k

    return None if library.fitness.get("bleu_files") else fetch_multi30k(args.cache_dir, args.mirror, progress=False)


def _library_and_sentences(args: argparse.Namespace, path: str) -> tuple[Any, Any, Any, Any]:
    """The checkpoint's model and vocabulary, its library at ``path``, and the sentences the library's BLEU is
    stated on (what a point added to or scored in it is verified on)."""
    from dynhat.inference.checkpoint import load_trained
    from dynhat.inference.points import PointLibrary
    from dynhat.recipes.points import bleu_sentences

    model, vocab = load_trained(args.checkpoint)
    library = PointLibrary.load(path, checkpoint=args.checkpoint, space=model.space)
    return model, vocab, library, bleu_sentences(library, _multi30k_for(args, library))


def _variants(args: argparse.Namespace) -> int:
    from dynhat.search.decoding import add_variants

    model, vocab, library, sentences = _library_and_sentences(args, args.points)
    extended = add_variants(library, model, vocab, sentences, args.beams, args.runs, cpus=args.cpus)
    extended = extended.made_by(args.invocation)
    extended.save(args.out)
    print_library(extended)
    print(f"{len(extended.points) - len(library.points)} variants added; wrote {args.out}")
    return 0


def _search(args: argparse.Namespace) -> int:
    from dynhat.data.fetch import fetch_multi30k, load_multi30k
    from dynhat.inference.checkpoint import load_trained
    from dynhat.inference.measure import pinned
    from dynhat.latency.predictor import load_predictor
    from dynhat.search.evolution import EvolutionSettings
    from dynhat.search.operating_points import SearchSettings, search_operating_points

    evolution = EvolutionSettings.for_population(args.population, args.parents, iterations=args.iterations,
                                                 patience=args.patience, seed=args.seed)
    settings = SearchSettings(args.constraints, args.mode, args.valid_sentences or None, args.seed, evolution,
                              verify_runs=args.verify_runs, bleu_sentences=args.bleu_sentences or None,
                              threads=args.threads, variant_beams=args.variant_beams, precision=args.precision,
                              workers=args.workers, engine=args.engine)
    model, vocab = load_trained(args.checkpoint)
    predictor = load_predictor(args.predictor)
    root = fetch_multi30k(args.cache_dir, args.mirror, progress=False)
    with pinned(None, args.threads):
        report = search_operating_points(model, vocab, args.checkpoint, predictor, load_multi30k("val", root),
                                         settings)
    library = report.library.made_by(args.invocation)
    library.save(args.out)
    print_library(library)
    for o in report.overshoots:
        print(f"over its constraint: {o['id']} at {o['constraint_ms']:g} ms measured {o['measured_ms']:.2f} ms "
              f"(predicted {o['predicted_ms']:.2f}, margin {o['margin']:.2f}, attempt {o['attempt']})")
    print(f"{report.seconds:.0f} s, {report.evaluations} loss evaluations ({report.cache_hits} cache hits); "
          f"wrote {args.out}")
    return 0


def _points_add(args: argparse.Namespace) -> int:
    from dynhat.data.fetch import fetch_multi30k, load_multi30k
    from dynhat.inference.checkpoint import load_trained
    from dynhat.inference.measure import pinned
    from dynhat.inference.points import PointLibrary
    from dynhat.latency.predictor import load_predictor
    from dynhat.recipes.points import add_point, bleu_sentences, find_point

    model, vocab = load_trained(args.checkpoint)
    library = PointLibrary.load(args.library, checkpoint=args.checkpoint, space=model.space)
    source = PointLibrary.load(args.source, checkpoint=args.checkpoint, space=model.space)
    config = find_point(source, args.id, args.source).config
    root = fetch_multi30k(args.cache_dir, args.mirror, progress=False)
    with pinned(None, library.threads):
        point = add_point(library, config, model, vocab, load_predictor(args.predictor), load_multi30k("val", root),
                          bleu_sentences(library, root), args.runs)
    library.made_by(args.invocation).save(args.out)
    print(f"{point.id}: measured {point.measured_ms:.1f} ms, predicted {point.predicted_ms:.1f} ms, valid loss "
          f"{point.valid_loss:.4f}, BLEU {point.bleu}; wrote {args.out}")
    return 0


def _points_int8(args: argparse.Namespace) -> int:
    from dynhat.inference.points import sentences_text
    from dynhat.search.decoding import add_int8_bleu

    model, vocab, library, sentences = _library_and_sentences(args, args.library)
    scored = add_int8_bleu(library, model, vocab, sentences).made_by(args.invocation)
    scored.save(args.out)
    print_library(scored)
    print(f"int8 BLEU on {sentences_text(*library.bleu_set())}; wrote {args.out}")
    return 0


def _points_bleu(args: argparse.Namespace) -> int:
    from dataclasses import replace
    from pathlib import Path

    from dynhat.inference.checkpoint import load_trained
    from dynhat.inference.points import PointLibrary, checkpoint_sha256, sentences_text
    from dynhat.inference.release import is_release, library_file
    from dynhat.recipes.points import bleu_sentences, with_bleu_set
    from dynhat.search.decoding import rescore_bleu

    if (args.src is None) != (args.ref is None) or (args.src is not None and args.split is not None):
        raise ConfigError("give --src with --ref (a development set of your own), or a --split", field="--src")
    path = library_file(args.library)
    if is_release(args.library) and Path(args.out).resolve() == path.resolve():
        raise ConfigError(f"{path} is a release's library, pinned by its manifest: write another file and re-export "
                          "the release with it (dynhat export --points)", field="--out")
    model, vocab = load_trained(args.checkpoint)
    library = PointLibrary.load(path, checkpoint=args.checkpoint, space=model.space)
    files = None if args.src is None else (Path(args.src).resolve(), Path(args.ref).resolve())  # from anywhere
    moved = with_bleu_set(library, args.sentences or None, None if files else args.split or "val", files)
    sentences = bleu_sentences(moved, _multi30k_for(args, moved))
    scored = replace(rescore_bleu(moved, model, vocab, sentences),  # of these weights: checked above
                     checkpoint={"path": str(args.checkpoint), "sha256": checkpoint_sha256(args.checkpoint)}
                     ).made_by(args.invocation)
    scored.save(args.out)
    print_library(scored)
    print(f"BLEU on {sentences_text(*scored.bleu_set())}: {len(scored.efficient())} points served; wrote {args.out}")
    return 0


def _points_show(args: argparse.Namespace) -> int:
    from dynhat.inference.points import PointLibrary, sentences_text
    from dynhat.inference.release import library_file

    path = library_file(args.library)
    library = PointLibrary.load(path)
    print(f"{path}: {len(library.unique())} points, {len(library.efficient())} served; measured on "
          f"{library.device.get('cpu', 'an unnamed CPU')} at {library.threads} thread(s), space {library.space}; "
          f"BLEU on {sentences_text(*library.bleu_set())}")
    print_library(library)
    for command in library.commands:
        print(f"made by: {command}")
    return 0


def _points_config(args: argparse.Namespace) -> int:
    from dynhat.inference.points import PointLibrary

    point = PointLibrary.load(args.library).select(args.point, args.library)
    point.config.save_yaml(args.out)
    print(f"{args.point}: {point.id} ({point.measured_ms:.1f} ms, BLEU {point.bleu}); wrote {args.out}")
    return 0
