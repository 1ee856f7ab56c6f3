"""``dynhat run``: the main job on the embedded default (Multi30k, CPU-scale space), step by step."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="run the whole pipeline on the embedded default (Multi30k)")
    run.add_argument("--space", default="multi30k-cpu", help="design space (default multi30k-cpu)")
    run.add_argument("--vocab", type=int, default=8000, help="joint subword vocabulary size")
    run.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from dynhat.model import ModelSettings, SuperTransformer
    from dynhat.space import largest, load_space, smallest
    from dynhat.space.cost import count_macs, count_params

    space = load_space(args.space)
    print(f"[1/2] design space {space.name}: {space.num_configurations():,} SubTransformers")
    model = SuperTransformer(space, ModelSettings(vocab_size=args.vocab))
    print(f"[2/2] SuperTransformer: {model.num_parameters():,} parameters")
    for label, config in (("smallest", smallest(space)), ("largest", largest(space))):
        params = count_params(config, space, args.vocab)
        print(f"      {label:<8} {config.id}: {params.total:,} parameters, "
              f"{count_macs(config, space, args.vocab) / 1e6:.1f} M MACs per 30-token translation")
    return 0
