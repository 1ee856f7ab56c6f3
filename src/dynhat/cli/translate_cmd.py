"""``dynhat translate`` and ``dynhat evaluate``."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from dynhat.cli.args import integer, real
from dynhat.inference.points import DEFAULT_BEAM

if TYPE_CHECKING:
    from dynhat.model import SuperTransformer
    from dynhat.space import SubTransformerConfig


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="training checkpoint, release folder, shipped release name (e.g. "
                                           "multi30k-en-de) or engine folder (dynhat export --engine)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--config", default="largest",
                       help="SubTransformer: largest, smallest, middle, a HAT YAML file, or one of their ids; of an "
                            "engine folder: fastest, middle, best or a point's id")
    which.add_argument("--point", default=None,
                       help="an operating point of the release's library (points.yml) or an engine folder's: "
                            "fastest, middle, best or a point's id")
    parser.add_argument("--beam", type=integer(1, 64), default=None,
                        help="default 4 (an operating point: its own beam)")
    parser.add_argument("--lenpen", type=real(), default=0.6)


def register(sub: argparse._SubParsersAction) -> None:
    translate = sub.add_parser("translate", help="translate sentences (stdin or a file) with a SubTransformer")
    _common(translate)
    translate.add_argument("--input", default="-", help="one sentence a line (default stdin)")
    translate.set_defaults(func=_translate)
    evaluate = sub.add_parser("evaluate", help="BLEU (sacreBLEU, Multi30k, HAT conventions) and validation loss")
    _common(evaluate)
    evaluate.add_argument("--split", default="test_2016_flickr", help="Multi30k test split")
    evaluate.add_argument("--src", default=None,
                          help="score this source file instead of a Multi30k split (one sentence a line, .gz too)")
    evaluate.add_argument("--ref", default=None, help="the references of --src, line-aligned with it")
    evaluate.add_argument("--cache-dir", default=None)
    evaluate.add_argument("--from", dest="mirror", default=None)
    evaluate.add_argument("--output", default=None, help="write the detokenized translations here")
    evaluate.set_defaults(func=_evaluate)


def _translate(args: argparse.Namespace) -> int:
    from dynhat.data.corpus import decode_lines, read_lines
    from dynhat.inference.engine import is_engine, load_engine

    if is_engine(args.checkpoint):  # CTranslate2 alone: no torch
        engine = load_engine(args.checkpoint)
        translator = engine.translator(engine.point(args.point or args.config), args.beam, args.lenpen)
    else:
        from dynhat.inference.checkpoint import load_trained
        from dynhat.model.serving import ServingModel
        from dynhat.translate.translator import Translator

        model, vocab = load_trained(args.checkpoint)
        config, beam = _subtransformer(args, model)
        translator = Translator(ServingModel(model, [config]), vocab, config, beam=beam, lenpen=args.lenpen)
    lines = decode_lines(sys.stdin.buffer.read(), "stdin") if args.input == "-" else read_lines(args.input)
    for line in translator.translate(lines):
        print(line)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from dynhat.data.corpus import read_parallel, write_lines
    from dynhat.data.fetch import fetch_multi30k, load_multi30k
    from dynhat.errors import ConfigError
    from dynhat.inference.engine import is_engine, load_engine

    if (args.src is None) != (args.ref is None):
        raise ConfigError("--src and --ref go together: a source file and its line-aligned references")
    if is_engine(args.checkpoint):  # through CTranslate2: BLEU, no loss (the engine gives no training loss)
        from dynhat.translate.bleu import score

        engine = load_engine(args.checkpoint)
        point = engine.point(args.point or args.config)
        test = (read_parallel(args.src, args.ref) if args.src
                else load_multi30k(args.split, fetch_multi30k(args.cache_dir, args.mirror, progress=False)))
        hypotheses = engine.translator(point, args.beam, args.lenpen).translate(test.src)
        bleu = score(hypotheses, test.tgt, test.tgt_lang)
        print(f"point {point.id}  CTranslate2 {engine.quantization}, beam {args.beam or point.beam}")
    else:
        from dynhat.inference.checkpoint import load_trained
        from dynhat.recipes.evaluate import evaluate, evaluate_files

        model, vocab = load_trained(args.checkpoint)
        config, beam = _subtransformer(args, model)
        if args.src:
            result = evaluate_files(model, vocab, config, args.src, args.ref, beam, args.lenpen)
            where = f"loss on {args.ref}"
        else:
            root = fetch_multi30k(args.cache_dir, args.mirror, progress=False)
            result = evaluate(model, vocab, config, load_multi30k(args.split, root), load_multi30k("val", root),
                              beam, args.lenpen)
            where = "valid loss"
        hypotheses, bleu = result.hypotheses, result.bleu
        print(f"config {config.id}  beam {beam}  {where} {result.valid_loss:.3f} bits/token")
    if args.output:
        write_lines(args.output, hypotheses)
    print(f"BLEU {bleu.sacrebleu:.2f}  ({bleu.signature})")
    print(f"BLEU {bleu.multi30k:.2f}  (Multi30k convention: lowercased, normalised, Moses-tokenized)")
    print(f"BLEU {bleu.hat:.2f}  (HAT convention: Moses-tokenized, compound-split, cased)")
    return 0


def _subtransformer(args: argparse.Namespace, model: SuperTransformer) -> tuple[SubTransformerConfig, int]:
    """What ``--point`` (of the release's library) or ``--config`` names, and the beam it decodes with."""
    if args.point is None:
        from dynhat.space import resolve_config

        return resolve_config(args.config, model.space), args.beam or DEFAULT_BEAM
    from dynhat.inference.points import PointLibrary
    from dynhat.inference.release import library_path

    path = library_path(args.checkpoint, None, "name a SubTransformer with --config instead")
    point = PointLibrary.load(path, checkpoint=args.checkpoint, space=model.space).select(args.point, str(path))
    return point.config, args.beam or point.beam
