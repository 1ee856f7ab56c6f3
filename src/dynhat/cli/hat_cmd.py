"""``dynhat convert`` (HAT checkpoint -> dynhat checkpoint) and ``dynhat export-hat`` (the way back)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    convert = sub.add_parser("convert", help="convert a HAT (fairseq 0.8) checkpoint and its dictionary into a "
                                             "dynhat checkpoint that every command reads")
    convert.add_argument("hat_checkpoint", help="HAT SuperTransformer or SubTransformer checkpoint (.pt)")
    convert.add_argument("--dict", required=True, help="the model's fairseq dictionary (dict.<lang>.txt)")
    convert.add_argument("--bpe-codes", default=None, help="subword-nmt BPE codes of the model's data (optional)")
    convert.add_argument("--out", required=True, help="dynhat checkpoint to write")
    convert.add_argument("--source-lang", default=None, help="Moses rules for input text (default: the checkpoint's)")
    convert.add_argument("--target-lang", default=None, help="Moses rules for output text (default: the checkpoint's)")
    convert.add_argument("--aggressive-dash-splits", action="store_true",
                         help="Moses -a: split hyphens as the model's training data did (HAT's WMT'14 En-Fr)")
    convert.set_defaults(func=_convert)

    export = sub.add_parser("export-hat", help="write a dynhat checkpoint's model as a HAT checkpoint with its "
                                               "dictionaries")
    export.add_argument("checkpoint", help="dynhat checkpoint (trained or converted)")
    export.add_argument("--out-dir", required=True, help="folder for checkpoint.pt, dict.<lang>.txt and tokenizer")
    export.add_argument("--config", default=None,
                        help="also describe this SubTransformer in the args (largest, smallest, middle or a YAML), "
                             "as HAT's SubTransformer checkpoints do")
    export.add_argument("--source-lang", default=None, help="default: the vocabulary's, else en")
    export.add_argument("--target-lang", default=None, help="default: the vocabulary's, else de")
    export.set_defaults(func=_export)


def _convert(args: argparse.Namespace) -> int:
    from dynhat.hat.convert import convert_hat

    done = convert_hat(args.hat_checkpoint, args.dict, args.out, args.bpe_codes, args.source_lang, args.target_lang,
                       args.aggressive_dash_splits)
    space, vocab = done.hat.space, done.vocab
    kind = "SubTransformer" if done.hat.subtransformer is not None else "SuperTransformer"
    print(f"{args.hat_checkpoint}: HAT {kind}, {done.hat.model.num_parameters():,} parameters, "
          f"{space.num_configurations():,} SubTransformers in its space")
    print(f"vocabulary: {vocab!r}")
    print(f"wrote {done.checkpoint} and its design space {done.space_yaml}")
    if done.subtransformer_yaml is not None:
        print(f"wrote {done.subtransformer_yaml}: the SubTransformer the checkpoint was trained as; translate "
              f"with --config {done.subtransformer_yaml}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from dynhat.hat.convert import export_hat

    for path in export_hat(args.checkpoint, args.out_dir, args.config, args.source_lang, args.target_lang):
        print(f"wrote {path}")
    return 0
