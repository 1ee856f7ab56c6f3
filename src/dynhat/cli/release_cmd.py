"""``dynhat export``: a training checkpoint as a release folder (safetensors weights, vocabulary, space, card), or
a library's operating points as an engine folder (``--engine ctranslate2``) that a service serves without torch."""

from __future__ import annotations

import argparse

CARD_SPLITS = "test_2016_flickr,test_2017_flickr"  # dynhat.recipes.release.CARD_SPLITS, without importing torch


def register(sub: argparse._SubParsersAction) -> None:
    export = sub.add_parser("export", help="write a checkpoint as a release folder that every command loads: "
                                           "safetensors weights, vocabulary, space, model card, sha256 manifest")
    export.add_argument("checkpoint", help="training or converted checkpoint, release folder or shipped name")
    export.add_argument("--out-dir", required=True, help="the release folder to write")
    export.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16",
                        help="weights on disk (loaded as fp32)")
    export.add_argument("--points", default=None, help="operating-point library of this checkpoint: the release's "
                                                        "points.yml and its card; with --engine, the points to "
                                                        "export (default: the release's own)")
    export.add_argument("--engine", choices=("ctranslate2",), default=None,
                        help="write the library's served points as CTranslate2 models (an engine folder, "
                             "dynhat serve ENGINE_DIR) instead of a release")
    export.add_argument("--quantization", choices=("int8", "int8_float32", "int16", "float32", "float16",
                                                    "bfloat16"), default="int8",
                        help="with --engine: the weights' type in the engine folder")
    export.add_argument("--bleu-splits", default=CARD_SPLITS,
                        help="with --points: Multi30k test splits each point is scored on in full, on the release's "
                             f"weights, comma-separated (default {CARD_SPLITS}; '' for none)")
    export.add_argument("--train-command", default=None,
                        help="the command that trained the checkpoint, for the card's Reproduce section")
    export.add_argument("--name", default=None, help="the model's name in the card (default: the folder's)")
    export.add_argument("--cache-dir", default=None, help="dataset cache (for --bleu-splits)")
    export.add_argument("--from", dest="mirror", default=None, help="local Multi30k copy (for --bleu-splits)")
    export.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    from dynhat.inference.release import library_path
    from dynhat.recipes.release import export_engine_scored, export_scored

    splits = [s.strip() for s in args.bleu_splits.split(",") if s.strip()]
    if args.engine is not None:
        points = library_path(args.checkpoint, args.points)
        out = export_engine_scored(args.checkpoint, points, args.out_dir, args.quantization, splits, args.cache_dir,
                                   args.mirror)
        print(f"engine folder written to {out}: serve it with dynhat serve {out} --budget-ms MS")
        return 0
    out = export_scored(args.checkpoint, args.out_dir, args.dtype, args.points, args.name, args.train_command,
                        splits, args.cache_dir, args.mirror)
    print(f"release written to {out} ({', '.join(sorted(p.name for p in out.iterdir()))})")
    return 0
