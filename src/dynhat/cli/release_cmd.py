"""``dynhat export``: a training checkpoint as a release folder (safetensors weights, vocabulary, space, card)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    export = sub.add_parser("export", help="write a checkpoint as a release folder that every command loads: "
                                           "safetensors weights, vocabulary, space, model card, sha256 manifest")
    export.add_argument("checkpoint", help="training or converted checkpoint")
    export.add_argument("--out-dir", required=True, help="the release folder to write")
    export.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16",
                        help="weights on disk (loaded as fp32)")
    export.add_argument("--points", default=None, help="operating-point library of this checkpoint, for the card")
    export.add_argument("--name", default=None, help="the model's name in the card (default: the folder's)")
    export.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    from dynhat.inference.release import export_checkpoint

    out = export_checkpoint(args.checkpoint, args.out_dir, args.dtype, args.points, args.name)
    print(f"release written to {out} ({', '.join(sorted(p.name for p in out.iterdir()))})")
    return 0
